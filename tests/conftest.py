"""Shared fixtures: one local Ray and one Prefect test API per session, the shared data, S3 on loopback."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="winnow-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_HOME, "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
# the helpers tests share with the benchmarks (`support`, `dedup_eval`) live in benchmarks/
sys.path.insert(0, str(REPO / "benchmarks"))


DATA = REPO / "tests" / "data"


def data_path(relative: str) -> Path:
    """A file of the real text kept in tests/data (sources and licences: tests/data/README.md)."""
    path = DATA / relative
    if not path.exists():
        raise FileNotFoundError(f"{path}: not in tests/data (see tests/data/README.md)")
    return path


def text_lines(relative: str) -> list[str]:
    """The lines of a (gzipped) text file in tests/data."""
    import gzip

    path = data_path(relative)
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as f:
        return f.read().splitlines()


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture
def session_prefect_api(prefect_api, monkeypatch):
    """`winnow run` subprocesses started by the test talk to the session's Prefect API instead of each
    starting an ephemeral server of its own (about 8 s each). test_resume runs the CLI on the ephemeral
    default, as a user does."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url and url.startswith("http"), url
    monkeypatch.setenv("PREFECT_API_URL", url)


@pytest.fixture(scope="session")
def mission_demo(tmp_path_factory, ray_local, prefect_api):
    """`winnow demo` (every stage family, its models trained from its own generator) on a smaller corpus:
    (summary, output directory). Shared by the report, inspect and demo tests."""
    from winnow.flows.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "out"
    return run_demo(out, seed=2, docs_per_shard=100, log=lambda line: None), out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto) on 127.0.0.1, with a bucket and credentials in the env."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="winnow-test")
    yield endpoint
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def web_documents() -> list[str]:
    """The 2,000 shared C4 documents (two samples of 1,000)."""
    import gzip
    import json

    c4 = [json.loads(line)["text"] for line in text_lines("web/c4_sample.jsonl.gz")]
    with gzip.open(data_path("web/c4-sample.00000-of-00001.json.gz"), "rt") as f:
        return c4 + [json.loads(line)["text"] for line in f]


def documents(texts: list[str], ids: list[str] | None = None, **float_columns):
    """A document table (the contract's schema) for `texts`, plus optional float annotation columns."""
    import pyarrow as pa

    from winnow.schemas.documents import documents_table

    table = documents_table(texts, ids, source="test")
    for name, values in float_columns.items():
        table = table.append_column(name, pa.array(values, pa.float64()))
    return table


def write_jsonl(path: Path, lines: list[bytes | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(line.encode() if isinstance(line, str) else line for line in lines) + b"\n")
    return path
