"""Security properties: configs are loaded with YAML's safe loader, model weights are never
unpickled unchecked, paths cannot leave the output prefix, and credentials never reach logs,
manifests, the run summary or the report."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl
from winnow.schemas.config import ConfigError, S3Config, load_config
from winnow.storage.fs import resolve

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ["flows", "stages", "scorers", "gpu", "schemas", "storage", "winnow", "benchmarks"]
SECRET = "wJalrXUtnFEMI-winnow-secret-3c1d"


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"input: !!python/object/apply:os.system ['touch {marker}']\noutput: out\nstages: []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    assert not marker.exists()


def _calls(name: str) -> list[tuple[Path, str]]:
    """Every call of `name(` in the project's source, with its arguments (up to the closing paren)."""
    found = []
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            text = path.read_text()
            for match in re.finditer(re.escape(name) + r"\(", text):
                depth, end = 1, match.end()
                while depth and end < len(text):
                    depth += {"(": 1, ")": -1}.get(text[end], 0)
                    end += 1
                found.append((path, text[match.start():end]))
    return found


def test_no_unchecked_unpickling_of_weights_or_configs():
    assert [(p, c) for p, c in _calls("torch.load") if "weights_only=True" not in c] == []
    assert [(p, c) for p, c in _calls("yaml.load") if "SafeLoader" not in c] == []
    assert [(p, c) for p, c in _calls("pickle.load") + _calls("pickle.loads")] == []
    # the scanner itself finds calls (so an empty answer above means something)
    assert _calls("yaml.safe_load")


@pytest.mark.parametrize("part", ["..", "../x", "a/../../b", "/etc/passwd", "", "a//b", "./a", "a\\..\\b", "a\0b"])
def test_path_parts_cannot_leave_the_output(part, tmp_path):
    for root in (resolve(str(tmp_path / "out")), resolve("s3://bucket/runs/a", S3Config(endpoint_url="http://x:1"))):
        with pytest.raises(ValueError, match="refusing a path part"):
            root.join(part)
        assert root.join("stage", "part-00000.parquet").path.startswith(root.path + "/")


@pytest.mark.usefixtures("ray_local", "prefect_api")
def test_credentials_in_the_config_reach_no_log_manifest_summary_or_report(tmp_path):
    import random

    from winnow.flows.curate import curate
    from winnow.flows.demo import article

    write_jsonl(tmp_path / "in" / "a.jsonl", [json.dumps({"text": article(random.Random(i))}) for i in range(50)])
    config = {"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"),
              "storage": {"s3": {"access_key_id": "AKIAWINNOWTEST", "secret_access_key": SECRET}},
              "stages": [{"name": "ingest"}, {"name": "heuristics"}], "runtime": {"progress": False}}
    records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(handler.format(record))
    loggers = [logging.getLogger(name) for name in ("", "prefect", "winnow")]  # Prefect's do not propagate to root
    for logger in loggers:
        logger.addHandler(handler)
    try:
        summary = curate(config)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    log = "\n".join(records)
    assert "heuristics: 50 in" in log  # the run's log was captured
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix in (".json", ".html")]
    assert {"_run.json", "_manifest.json", "report.html"} <= {p.name for p in written}
    everything = log + json.dumps(summary) + "".join(p.read_text() for p in written)
    assert SECRET not in everything and "AKIAWINNOWTEST" not in everything
    assert json.loads((tmp_path / "out" / "_run.json").read_text())["config"]["storage"]["s3"]["secret_access_key"] \
        == "**********"


def test_a_deployment_refuses_a_config_with_credentials(tmp_path):
    from winnow.flows.deploy import deploy

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"input": {"uri": str(tmp_path)}, "output": "s3://bucket/out",
                                      "storage": {"s3": {"secret_access_key": SECRET}},
                                      "stages": [{"name": "ingest"}]}))
    with pytest.raises(ConfigError, match="remove storage.s3 credentials"):
        deploy(config, "nightly", "0 3 * * *")
