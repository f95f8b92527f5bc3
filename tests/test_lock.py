"""One run per output: a second run refuses with the holder's name and age, a dead driver's lock
is taken over, `--break-lock` removes any lock, locally and on S3 (a conditional PUT)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from winnow.schemas.config import S3Config
from winnow.storage.fs import resolve
from winnow.storage.lock import LOCK, OutputLockedError, output_lock


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return resolve(str(tmp_path / "out"))
    endpoint = request.getfixturevalue("s3_server")
    return resolve(f"s3://winnow-test/locks/{tmp_path.name}", S3Config(endpoint_url=endpoint))


def test_a_second_run_on_the_same_output_refuses_and_names_the_holder(output):
    with output_lock(output, "run-one"):
        held = json.loads(output.join(LOCK).read_bytes())
        assert held["run_id"] == "run-one" and held["pid"] and held["user"] and held["host"]
        with pytest.raises(OutputLockedError) as refused:
            with output_lock(output, "run-two"):
                pass
        message = str(refused.value)
        assert "run-one" in message and f"{held['user']}@{held['host']}" in message
        assert "taken 0 s ago" in message and "--break-lock" in message
        assert json.loads(output.join(LOCK).read_bytes())["run_id"] == "run-one"  # untouched
    assert not output.join(LOCK).exists()  # released at the end of the run


def test_break_lock_takes_over_a_live_lock(output):
    with output_lock(output, "run-one"):
        with output_lock(output, "run-two", break_lock=True):
            assert json.loads(output.join(LOCK).read_bytes())["run_id"] == "run-two"


def test_a_dead_drivers_lock_is_taken_over_but_another_hosts_is_not(output):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = {"user": "someone", "host": __import__("socket").gethostname(), "pid": int(dead.stdout),
            "run_id": "killed", "since": time.time() - 7200, "heartbeat": time.time() - 7200}
    output.join(LOCK).write_bytes_atomic(json.dumps(lock).encode())
    with output_lock(output, "resumed"):
        assert json.loads(output.join(LOCK).read_bytes())["run_id"] == "resumed"

    output.join(LOCK).write_bytes_atomic(json.dumps(lock | {"host": "another-host"}).encode())
    with pytest.raises(OutputLockedError, match=r"taken 2\.0 h ago; no heartbeat for 2\.0 h, so it looks stale"):
        with output_lock(output, "mine"):
            pass


@pytest.mark.usefixtures("session_prefect_api")
def test_winnow_run_refuses_a_locked_output_with_a_clear_message(tmp_path):
    config = tmp_path / "c.yaml"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "some text"}\n')
    config.write_text(yaml.safe_dump({"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"),
                                      "stages": [{"name": "ingest"}]}))
    with output_lock(resolve(str(tmp_path / "out")), "the-first-run"):
        result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "run", str(config)], capture_output=True,
                                text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is locked by run the-first-run" in result.stdout and "--break-lock" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out" / "ingest").exists()  # refused before any work
