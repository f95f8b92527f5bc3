"""Scheduled runs for real: `prefect server start` on 127.0.0.1, `winnow deploy` creates a cron
deployment on it, a run triggered with per-run parameters is executed by `winnow serve` and
completes with those parameters applied."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import free_port, write_jsonl

pytestmark = pytest.mark.slow


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect API server process on 127.0.0.1 with its own home (database)."""
    tmp_path = tmp_path_factory.mktemp("prefect")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}  # plan scheduled runs promptly
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None, "prefect server exited:\n" + server.stdout.read()
        time.sleep(0.5)
    else:
        pytest.fail("prefect server did not answer within 180 s:\n" + _stop(server))
    client_env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect-client"),
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    yield api, client_env
    _stop(server)


def _api(api: str, method: str, path: str, **kwargs):
    response = httpx.request(method, f"{api}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def test_deploy_trigger_and_serve_a_scheduled_run(prefect_server, tmp_path):
    api, env = prefect_server
    write_jsonl(tmp_path / "in" / "a.jsonl", [json.dumps({"text": f"document number {i % 7}"}) for i in range(40)])
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "default-out"),
                                      "stages": [{"name": "ingest"}, {"name": "exact_dedup"}],
                                      "runtime": {"num_cpus": 1, "progress": False}}))
    deployed = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "deploy", str(config), "--cron", "0 3 * * *",
                               "--name", "nightly"], env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "deployment 'nightly'" in deployed.stdout and api in deployed.stdout

    deployment = _api(api, "GET", "/deployments/name/curate/nightly")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
    assert deployment["parameters"]["config"]["stages"][1] == {"name": "exact_dedup"}  # the config itself, stored

    # a run triggered now, with per-run parameters: another output and a stage override
    out = tmp_path / "triggered-out"
    run = _api(api, "POST", f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": {
        **deployment["parameters"], "out": str(out), "overrides": {"stages": {"exact_dedup": {"normalize": "none"}}}}})

    serve = subprocess.Popen([sys.executable, "-m", "winnow.flows.cli", "serve", "nightly"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, state, scheduled = time.time() + 420, None, []
        while time.time() < deadline and serve.poll() is None:
            state = _api(api, "GET", f"/flow_runs/{run['id']}")["state"]["type"]
            # while served, the schedule is live: the server plans the coming 03:00 runs
            scheduled = _api(api, "POST", "/flow_runs/filter", json={
                "deployments": {"id": {"any_": [deployment["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
            if state in ("FAILED", "CRASHED", "CANCELLED") or state == "COMPLETED" and scheduled:
                break
            time.sleep(2)
    finally:
        log = _stop(serve)
    assert state == "COMPLETED", f"flow run ended {state}:\n{log[-4000:]}"
    assert scheduled and all("T03:00:00" in r["expected_start_time"] for r in scheduled), scheduled

    summary = json.loads((out / "_run.json").read_text())
    assert summary["config"]["stages"][1]["normalize"] == "none"  # the per-run override applied
    assert summary["stages"]["ingest"]["rows_in"] == 40 and summary["stages"]["exact_dedup"]["rows_out"] == 7
    assert (out / "report.html").exists() and not (tmp_path / "default-out").exists()


def test_infra_prefect_yaml_declares_the_same_deployment(prefect_server):
    api, env = prefect_server
    root = Path(__file__).resolve().parents[1]
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run([*prefect, "work-pool", "create", "winnow-process", "--type", "process"], env=env, check=True,
                   capture_output=True, timeout=120)
    done = subprocess.run([*prefect, "--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"],
                          env={**env, "WINNOW_HOME": str(root)}, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployment = _api(api, "GET", "/deployments/name/curate/nightly-crawl")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
    assert deployment["work_pool_name"] == "winnow-process"
    assert set(deployment["parameters"]) >= {"config", "out", "overrides"}
