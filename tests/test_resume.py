"""A driver killed mid-run, then resumed, gives byte-identical outputs and redoes no committed shard."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import write_jsonl
from winnow.flows.demo import article

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_api")
STAGES = ["ingest", "heuristics", "exact_dedup"]


def make_corpus(directory, shards=12, docs=250):
    rng = random.Random(7)
    pool = []
    for s in range(shards):
        lines = []
        for _ in range(docs):
            text = rng.choice(pool) if pool and rng.random() < 0.1 else article(rng)
            pool.append(text)
            lines.append(json.dumps({"text": text}))
        lines.insert(5, "{broken json")
        write_jsonl(directory / f"shard-{s:03d}.jsonl", lines)


def write_config(path, input_dir, out_dir):
    path.write_text(yaml.safe_dump({
        "input": {"uri": str(input_dir)}, "output": str(out_dir),
        "stages": [{"name": s} for s in STAGES],
        "runtime": {"max_in_flight": 1, "batch_size": 64, "progress": False},
    }))
    return path


def winnow(*args, **kwargs):
    env = {**os.environ, "PREFECT_HOME": os.environ["PREFECT_HOME"] + "-cli"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "winnow.flows.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def ledger(out):
    entries = {}
    for stage in STAGES:
        for path in sorted((out / stage / "_ledger").glob("*.json")) if (out / stage / "_ledger").exists() else []:
            entries[(stage, path.stem)] = json.loads(path.read_text())["run_id"]
    return entries


def outputs(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("*/**/part-*.parquet"))}


def test_killed_driver_resumes_to_identical_bytes(tmp_path):
    make_corpus(tmp_path / "in")
    from winnow.flows.curate import curate

    reference = tmp_path / "reference"
    curate(yaml.safe_load(write_config(tmp_path / "ref.yaml", tmp_path / "in", reference).read_text()))

    out = tmp_path / "out"
    config = write_config(tmp_path / "run.yaml", tmp_path / "in", out)
    proc = winnow("run", str(config), start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "heuristics" / "_ledger").glob("*.json"))) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a shard of the fused segment ingest+heuristics is committed once every stage of it has its entry
    committed = {(stage, shard): run_id for (stage, shard), run_id in ledger(out).items()
                 if ("heuristics", shard) in ledger(out)}
    assert not (out / "exact_dedup" / "_manifest.json").exists()
    assert 3 <= sum(stage == "heuristics" for stage, _ in committed) < 12

    resumed = winnow("run", str(config))
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    after = ledger(out)
    assert all(after[key] == run_id for key, run_id in committed.items()), "a committed shard was redone"
    assert len(after) == 3 * 12
    assert outputs(out) == outputs(reference)
    for stage in STAGES:
        manifest = json.loads((out / stage / "_manifest.json").read_text())
        ref = json.loads((reference / stage / "_manifest.json").read_text())
        assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_rejected"]) == \
               (ref["rows_in"], ref["rows_out"], ref["rows_rejected"])
