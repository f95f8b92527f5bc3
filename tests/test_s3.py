"""S3 end to end against a real S3-protocol server (moto) on 127.0.0.1, through a proxy that
throttles (503 SlowDown) and drops some requests: runs complete with nothing lost or duplicated,
large objects go up in multipart uploads, a failed upload leaves nothing visible, and no
credential reaches logs, manifests or the report."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import boto3
import pyarrow.parquet as pq
import pytest
import yaml
from s3_faults import FaultyS3Proxy

from winnow.flows.demo import demo_tokenizer, write_demo_corpus
from winnow.schemas.config import S3Config
from winnow.storage.fs import resolve
from winnow.storage.manifest import read_kept
from winnow.storage.shards import ShardWriter, upload_file

BUCKET = "winnow-test"
SECRET = "winnow-test-secret-5f2c9a"


def keys(endpoint: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def get(endpoint: str, key: str) -> bytes:
    return boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_large_objects_upload_in_parts_through_throttling_and_dropped_connections(s3_server, tmp_path):
    data = os.urandom(3 << 20) * 8  # 24 MiB: several parts
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    with FaultyS3Proxy(s3_server, throttle=0.2, drop=0.05, seed=1) as proxy:
        loc = resolve(f"s3://{BUCKET}/big/tokens.bin", S3Config(endpoint_url=proxy.url))
        upload_file(str(local), loc)
        assert any("uploads" in path for _, path, _ in proxy.log)  # CreateMultipartUpload
        assert sum("partNumber=" in path and fate == "forwarded" for _, path, fate in proxy.log) >= 3
        assert proxy.count("throttled") + proxy.count("dropped") > 0
    assert hashlib.sha256(get(s3_server, "big/tokens.bin")).digest() == hashlib.sha256(data).digest()


def test_an_upload_the_store_acknowledges_but_loses_is_uploaded_again(s3_server, tmp_path):
    local = tmp_path / "part.parquet"
    local.write_bytes(os.urandom(70_000))
    with FaultyS3Proxy(s3_server, throttle=0.0, drop=0.0) as proxy:
        proxy.lose_uploads = 1
        upload_file(str(local), resolve(f"s3://{BUCKET}/lost/part.parquet", S3Config(endpoint_url=proxy.url)))
        assert proxy.count("lost") == 1
    assert get(s3_server, "lost/part.parquet") == local.read_bytes()


def test_small_reads_survive_throttling(s3_server):
    """A read smaller than S3's SlowDown error document makes the AWS SDK fail without retrying
    (INTERNAL_FAILURE, "Failed to flush response stream"); winnow's reader retries it."""
    data = os.urandom(1 << 16)
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="small/x.bin", Body=data)
    with FaultyS3Proxy(s3_server, throttle=0.4, drop=0.0, seed=4) as proxy:
        loc = resolve(f"s3://{BUCKET}/small/x.bin", S3Config(endpoint_url=proxy.url, max_attempts=3))
        proxy.enabled = False  # (opening does a HEAD, not at issue here)
        raw = loc.fs.open_input_file(loc.path)
        proxy.enabled = True
        with pytest.raises(OSError, match="INTERNAL_FAILURE"):  # the SDK alone gives up on some read
            for offset in range(0, 3000, 100):
                raw.read_at(20, offset)
        with loc.open_read() as f:
            got = []
            for offset in range(0, 3000, 100):
                f.seek(offset)
                got.append(f.read(20))
        assert got == [data[o:o + 20] for o in range(0, 3000, 100)]
        assert proxy.count("throttled") > 5


def test_jsonl_is_streamed_in_large_ranges_not_one_request_per_chunk(s3_server):
    from winnow.storage.shards import S3_READ_BYTES, iter_jsonl_lines

    lines = [json.dumps({"text": f"line {i} " + "x" * 200}).encode() for i in range(60_000)]  # ~13 MB
    body = b"\n".join(lines) + b"\n"
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="jsonl/a.jsonl", Body=body)
    with FaultyS3Proxy(s3_server, throttle=0.0, drop=0.0) as proxy:
        loc = resolve(f"s3://{BUCKET}/jsonl/a.jsonl", S3Config(endpoint_url=proxy.url))
        got = [line for batch in iter_jsonl_lines(loc, batch_size=1000) for line in batch]
    assert got == lines
    assert sum(method == "GET" for method, _, _ in proxy.log) == -(-len(body) // S3_READ_BYTES)  # 2, not ~200


def test_a_warc_on_s3_behind_a_throttling_store_reads_as_from_disk(s3_server):
    from conftest import data_path
    from winnow.schemas.config import InputConfig
    from winnow.stages.base import RunContext
    from winnow.stages.ingest import Ingest, IngestConfig

    path = data_path("web/warc__sample-0001.warc.gz")
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=BUCKET, Key="warc/a.warc.gz", Body=path.read_bytes())

    def ingest(uri: str, s3: S3Config | None = None):
        root = uri.rsplit("/", 1)[0]
        stage = Ingest(IngestConfig(), RunContext(input=InputConfig(uri=root, source="cc"), input_root=root))
        results = list(stage.process_shard(resolve(uri, s3), 10))
        return [r.kept.to_pylist() for r in results], [r.rejects.column("id").to_pylist() for r in results]

    with FaultyS3Proxy(s3_server, throttle=0.5, drop=0.0, seed=1) as proxy:
        from_s3 = ingest(f"s3://{BUCKET}/warc/a.warc.gz", S3Config(endpoint_url=proxy.url))
    assert from_s3 == ingest(str(path)) and sum(map(len, from_s3[0])) == 15
    assert proxy.count("throttled") > 0


def test_a_long_run_of_writes_under_heavy_throttling_loses_none(s3_server):
    """Retries must not run out over a job's life: the AWS SDK's "standard" strategy stops retrying
    once its per-client quota is spent (here after ~100 retries), failing the next throttled write."""
    with FaultyS3Proxy(s3_server, throttle=0.5, drop=0.0, seed=3) as proxy:
        root = resolve(f"s3://{BUCKET}/many", S3Config(endpoint_url=proxy.url))
        for i in range(25):
            root.join(f"{i}.json").write_bytes_atomic(json.dumps({"i": i}).encode())
        assert proxy.count("throttled") > 60
    assert keys(s3_server, "many/") == sorted(f"many/{i}.json" for i in range(25))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_store_that_keeps_failing_fails_the_shard_and_never_rejects_its_rows(s3_server, tmp_path, suffix):
    """An input the store stops serving mid-file is a storage error (Ray retries the task), not a
    corrupt file whose remaining rows become `corrupt_file` rejects."""
    from winnow.schemas.config import InputConfig
    from winnow.stages.base import RunContext
    from winnow.stages.ingest import Ingest, IngestConfig
    from winnow.storage.fs import StorageError

    rows = [{"text": f"document {i} " + "words " * 60} for i in range(60_000)]  # ~23 MB: several reads
    local = tmp_path / f"a{suffix}"
    if suffix == ".jsonl":
        local.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        pq.write_table(pa.Table.from_pylist(rows), local, row_group_size=5000)
    boto3.client("s3", endpoint_url=s3_server).upload_file(str(local), BUCKET, f"failing/a{suffix}")
    with FaultyS3Proxy(s3_server, throttle=0.0, drop=0.0) as proxy:
        loc = resolve(f"s3://{BUCKET}/failing/a{suffix}", S3Config(endpoint_url=proxy.url, max_attempts=1))
        ingest = Ingest(IngestConfig(), RunContext(input=InputConfig(uri=f"s3://{BUCKET}/failing"),
                                                   input_root=f"s3://{BUCKET}/failing"))
        results = ingest.process_shard(loc, batch_size=1000)
        assert next(results).kept.num_rows == 1000
        proxy.throttle = 1.0  # from now on the store answers every request with 503 SlowDown
        with pytest.raises(StorageError, match="after 5 attempts"):
            for result in results:
                assert result.rejects is None or result.rejects.num_rows == 0


def test_a_failed_upload_leaves_no_half_written_shard(s3_server, tmp_path):
    from conftest import documents
    from winnow.schemas.documents import DOCUMENT_SCHEMA

    with FaultyS3Proxy(s3_server, throttle=1.0, drop=0.0) as proxy:  # the store refuses everything
        loc = resolve(f"s3://{BUCKET}/broken/part-00000.parquet", S3Config(endpoint_url=proxy.url, max_attempts=2))
        writer = ShardWriter(loc, DOCUMENT_SCHEMA)
        writer.write(documents(["a text"] * 1000))
        with pytest.raises(OSError):
            writer.commit()
        assert proxy.count("throttled") >= 2  # retried before giving up
    assert keys(s3_server, "broken/") == []


@pytest.mark.slow
@pytest.mark.usefixtures("session_prefect_api")
def test_winnow_run_with_input_and_output_on_s3_survives_a_faulty_store(s3_server, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_server)
    paths = write_demo_corpus(tmp_path / "input", seed=3, docs_per_shard=120)
    for path in paths:
        s3.upload_file(str(path), BUCKET, f"input/{path.name}")
    tokenizer = demo_tokenizer(tmp_path / "bpe", seed=3)
    with FaultyS3Proxy(s3_server, throttle=0.05, drop=0.02, seed=2) as proxy:
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump({
            "input": {"uri": f"s3://{BUCKET}/input", "glob": "crawl-*"},
            "output": f"s3://{BUCKET}/runs/a",
            "storage": {"s3": {"endpoint_url": proxy.url, "region": "us-east-1"}},
            "runtime": {"batch_size": 128, "progress": False},
            "stages": [{"name": "ingest"}, {"name": "heuristics"}, {"name": "exact_dedup"}, {"name": "dedup"},
                       {"name": "tokenize", "tokenizer": tokenizer},
                       {"name": "pack", "strategy": "bfd", "seq_len": 512, "ranks": 2}]}))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "winnow-test-key", "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_ENDPOINT_URL": proxy.url, "PREFECT_LOGGING_LEVEL": "DEBUG"}
        result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "run", str(config)], capture_output=True,
                                text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        faults = proxy.count("throttled") + proxy.count("dropped")
    assert faults > 0

    run = json.loads(get(s3_server, "runs/a/_run.json"))
    assert [run["stages"][n]["kept"] for n in run["stages"]] == ["fused", "written", "fused", "fused", "written",
                                                                  "unchanged"]
    output = resolve(f"s3://{BUCKET}/runs/a", S3Config(endpoint_url=s3_server, region="us-east-1"))
    previous_ids = None
    for name in run["stages"]:
        manifest = json.loads(get(s3_server, f"runs/a/{name}/_manifest.json"))
        assert manifest["rows_in"] + manifest["rows_added"] == manifest["rows_out"] + manifest["rows_rejected"]
        rejected_ids = []
        # every stage's kept rows, wherever its segment left them (fused stages write none of their own)
        kept_ids = read_kept(output, name, ["id"]).column("id").to_pylist()
        for shard in manifest["shards"]:
            assert (shard["output"] is not None) == (manifest["kept"] == "written"), name
            if shard["output"]:
                body = get(s3_server, f"runs/a/{name}/{shard['output']['path']}")
                assert hashlib.sha256(body).hexdigest() == shard["output"]["sha256"]
            if shard["rejects"]:
                rej = get(s3_server, f"runs/a/{name}/{shard['rejects']['path']}")
                rejected_ids += pq.read_table(__import__("io").BytesIO(rej), columns=["id"]).column("id").to_pylist()
        assert len(kept_ids) == len(set(kept_ids)) == manifest["rows_out"], name  # nothing duplicated
        assert len(rejected_ids) == manifest["rows_rejected"], name
        if previous_ids is not None and name != "tokenize":  # (tokenize may split ids into parts)
            assert set(kept_ids) | set(rejected_ids) == previous_ids, name  # nothing lost
        previous_ids = set(kept_ids)
    tokens = keys(s3_server, "runs/a/tokens/")
    assert {f"runs/a/tokens/megatron/rank-0000{r}.{ext}" for r in (0, 1) for ext in ("bin", "idx")} <= set(tokens)
    assert "runs/a/tokens/summary.json" in tokens and "runs/a/tokens/bfd/rank-00000.parquet" in tokens
    assert not [k for k in keys(s3_server, "runs/a/") if "/.tmp" in k or k.endswith("_lock.json")]
    report = get(s3_server, "runs/a/report.html").decode()
    assert all(f'data-stage="{name}"' in report for name in run["stages"])
    # winnow inspect reads the run on S3 as it does a local one
    exact = json.loads(get(s3_server, "runs/a/exact_dedup/_manifest.json"))
    first = next(shard["rejects"]["path"] for shard in exact["shards"] if shard["rejects"])
    doc = pq.read_table(__import__("io").BytesIO(get(s3_server, f"runs/a/exact_dedup/{first}"))).to_pylist()[0]
    traced = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "inspect", f"s3://{BUCKET}/runs/a", "--id",
                             doc["id"]], capture_output=True, text=True, timeout=300,
                            env={**env, "AWS_ENDPOINT_URL": s3_server})
    assert traced.returncode == 0, traced.stdout + traced.stderr
    assert f"exact_dedup    dropped  exact_duplicate: {doc['reject_detail']}" in traced.stdout
    everything = result.stdout + result.stderr + json.dumps(run) + report + "".join(
        get(s3_server, k).decode() for k in keys(s3_server, "runs/a/") if k.endswith(".json"))
    assert SECRET not in everything
