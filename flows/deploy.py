"""Scheduled runs: Prefect deployments of the `curate` flow.

`deploy` stores a run config (its content, validated; never a credential) as the deployment's
default parameters, with a cron schedule, on the Prefect API in use (PREFECT_API_URL). Runs are
executed either by `serve` — a long-running runner process for winnow's deployments — or, with a
work pool, by `prefect worker start --pool …` on machines where winnow is installed. The flow is
referenced by module path (`winnow.flows.curate.curate`), so any environment with winnow can run it.
Per-run parameters (`out`, `overrides`, `config`) can be set when a run is triggered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from winnow.schemas.config import ConfigError, load_config

FLOW_NAME = "curate"


def _runner_deployment(name: str, schedules: list, parameters: dict, work_pool: str | None = None):
    from prefect.deployments.runner import EntrypointType

    from winnow.flows.curate import curate

    return curate.to_deployment(name=name, schedules=schedules, parameters=parameters, work_pool_name=work_pool,
                                enforce_parameter_schema=False, entrypoint_type=EntrypointType.MODULE_PATH,
                                description="winnow: curate a corpus (see the `config` parameter)")


def deploy(config_path: str | Path, name: str | None, cron: str, parameters: dict[str, Any] | None = None,
           work_pool: str | None = None, timezone: str = "UTC") -> dict[str, str]:
    """Create (or update) a deployment with a cron schedule; returns its name, id and the API."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    config = load_config(config_path)  # validated before anything is stored
    s3 = config.storage.s3
    if s3.access_key_id or s3.secret_access_key or s3.session_token:
        raise ConfigError("a deployment's parameters are stored by Prefect: remove storage.s3 credentials from the "
                          "config and give the runner/worker credentials through the AWS chain (env, profile, role)")
    try:
        schedule = CronSchedule(cron=cron, timezone=timezone)
    except ValueError as err:
        raise ConfigError(f"invalid cron schedule {cron!r}: {err}") from None
    raw = yaml.safe_load(Path(config_path).read_text())
    params = {"config": raw, **{k: v for k, v in (parameters or {}).items() if v is not None}}
    name = name or Path(config_path).stem
    deployment_id = _runner_deployment(name, [schedule], params, work_pool).apply(work_pool_name=work_pool)
    return {"name": name, "id": str(deployment_id), "api": PREFECT_API_URL.value() or "the ephemeral local API"}


def serve(names: list[str] | None = None) -> None:
    """Serve winnow's deployments (all, or those named) until interrupted: scheduled runs and runs
    triggered from the UI/CLI execute in this process's runner."""
    from prefect import serve as prefect_serve
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])))
    found = [d for d in found if d.work_pool_name is None and (not names or d.name in names)]
    missing = sorted(set(names or []) - {d.name for d in found})
    if missing or not found:
        raise ValueError(f"no served winnow deployment named {', '.join(missing)}" if missing else
                         "no winnow deployments to serve: create one with `winnow deploy CONFIG --cron ...`")
    prefect_serve(*[_runner_deployment(d.name, [s.schedule for s in d.schedules], d.parameters) for d in found])
