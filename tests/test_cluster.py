"""Cluster mode on a real two-node Ray cluster on this machine: `winnow run --ray-address` ships
its code to the workers and gives the same output as a local run; a worker killed mid-stage has
its shard retried and the output is still complete and identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_resume import make_corpus, outputs

from conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local", "prefect_api")]
STAGES = ["ingest", "heuristics", "exact_dedup", "dedup"]
RAY = str(Path(sys.executable).with_name("ray"))


def _processes(marker: str) -> list[int]:
    """Processes started by (or under) this test's cluster: they inherit the marker in their environment."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and a second node (one CPU each) on 127.0.0.1. Stopped by killing exactly its
    processes: `ray stop` would also stop the test session's own Ray."""
    temp = tempfile.mkdtemp(prefix="wr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    marker = f"WINNOW_TEST_CLUSTER={temp}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "WINNOW_TEST_CLUSTER": temp}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", f"--ray-client-server-port={free_port()}",
                        "--include-dashboard=false", *common], env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *common], env=env, check=True,
                       capture_output=True, timeout=180)
        yield {"address": f"127.0.0.1:{port}", "marker": marker, "env": env}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _processes(marker):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, prefect_api):
    """A 12-shard corpus and its output from a local (single-node) run, the reference."""
    from winnow.flows.curate import curate

    root = tmp_path_factory.mktemp("cluster")
    make_corpus(root / "in", shards=12, docs=200)
    config = {"input": {"uri": str(root / "in")}, "output": str(root / "reference"),
              "stages": [{"name": s} for s in STAGES], "runtime": {"batch_size": 64, "progress": False}}
    curate(config)
    return root, config


def _cluster_run(cluster, root, config, out):
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump({**config, "output": str(root / out)}))
    env = {**cluster["env"], "PREFECT_HOME": os.environ["PREFECT_HOME"] + "-cli"}
    env.pop("PREFECT_API_URL", None)
    if os.environ.get("PREFECT_API_URL"):  # the session's API (`session_prefect_api`), not a server per run
        env["PREFECT_API_URL"] = os.environ["PREFECT_API_URL"]
    return subprocess.Popen([sys.executable, "-m", "winnow.flows.cli", "run", str(path),
                             "--ray-address", cluster["address"]], env=env, cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.usefixtures("session_prefect_api")
def test_winnow_runs_on_a_two_node_cluster_with_its_code_shipped(ray_cluster, corpus):
    probe = subprocess.run([sys.executable, "-c", f"""
import json, ray
from winnow.runtime import ray_session

@ray.remote(num_cpus=1)
def where():
    import time, winnow.runtime.segments as runtime
    time.sleep(1.0)
    return ray.get_runtime_context().get_node_id(), runtime.__file__

with ray_session({ray_cluster["address"]!r}):
    print(json.dumps({{"nodes": sum(n["Alive"] for n in ray.nodes()),
                      "ran": ray.get([where.remote() for _ in range(4)])}}))
"""], env=ray_cluster["env"], cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["nodes"] == 2
    assert len({node for node, _ in seen["ran"]}) == 2  # both nodes worked
    # workers import the winnow the driver shipped (runtime_env py_modules), not an installed copy.
    # (The probe runs outside the checkout: Ray puts the driver's directory on the workers' path.)
    assert all("runtime_resources" in path and "py_modules" in path for _, path in seen["ran"]), seen["ran"]

    root, config = corpus
    run = _cluster_run(ray_cluster, root, config, "on-cluster")
    log = run.communicate(timeout=600)[0]
    assert run.returncode == 0, log[-4000:]
    assert outputs(root / "on-cluster") == outputs(root / "reference")
    for stage in STAGES:
        got = json.loads((root / "on-cluster" / stage / "_manifest.json").read_text())
        ref = json.loads((root / "reference" / stage / "_manifest.json").read_text())
        assert (got["rows_in"], got["rows_out"], got["rows_rejected"]) == \
               (ref["rows_in"], ref["rows_out"], ref["rows_rejected"])


@pytest.mark.usefixtures("session_prefect_api")
def test_a_worker_killed_mid_stage_has_its_shard_retried(ray_cluster, corpus):
    root, config = corpus
    run = _cluster_run(ray_cluster, root, config, "killed-worker")
    killed = None
    deadline = time.time() + 300
    while killed is None and run.poll() is None and time.time() < deadline:
        for pid in _processes(ray_cluster["marker"]):
            if _title(pid).startswith("ray::_segment_task"):
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.01)
    log = run.communicate(timeout=600)[0]
    assert killed is not None, "no shard task was caught running:\n" + log[-3000:]
    assert run.returncode == 0, log[-4000:]
    assert "Task _segment_task failed. There are 3 retries remaining, so the task will be retried" in log
    out = root / "killed-worker"
    assert outputs(out) == outputs(root / "reference")
    for stage in STAGES:
        manifest = json.loads((out / stage / "_manifest.json").read_text())
        assert len(manifest["shards"]) == 12
        assert manifest["rows_in"] + manifest["rows_added"] == manifest["rows_out"] + manifest["rows_rejected"]
        assert len(list((out / stage / "_ledger").glob("*.json"))) == 12
