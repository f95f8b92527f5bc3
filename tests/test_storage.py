import gzip
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from winnow.schemas.config import S3Config
from winnow.storage.fs import resolve
from winnow.storage.shards import CorruptInputError, ShardWriter, iter_jsonl_lines

LINES = [f'{{"text": "line {i}"}}'.encode() for i in range(10)]


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_jsonl_lines_plain_gz_zst_in_batches(tmp_path, suffix):
    data = b"\n".join(LINES) + b"\n"
    if suffix == ".gz":
        data = gzip.compress(data)
    elif suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"x.jsonl{suffix}"
    path.write_bytes(data)
    batches = list(iter_jsonl_lines(resolve(str(path)), batch_size=4, chunk_bytes=7))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [line for b in batches for line in b] == LINES


def test_truncated_gzip_yields_what_was_readable_then_a_clear_error(tmp_path):
    data = gzip.compress(b"\n".join(LINES * 2000) + b"\n")
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(CorruptInputError, match="cut.jsonl.gz: corrupt or truncated"):
        for batch in iter_jsonl_lines(resolve(str(path)), batch_size=1000):
            got += batch
    assert 0 < len(got) < 20000 and got[:10] == LINES


def test_list_files_by_glob_skips_hidden_and_underscore(tmp_path):
    for name in ["a.jsonl", "sub/b.jsonl.gz", "c.parquet", ".tmp-x.jsonl", "_manifest.json", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    root = resolve(str(tmp_path))
    listed = [loc.uri.removeprefix(root.uri + "/") for loc in root.list_files("*.jsonl*")]
    assert listed == ["a.jsonl", "sub/b.jsonl.gz"]
    assert len(root.list_files("*")) == 4
    with pytest.raises(FileNotFoundError, match="input not found"):
        resolve(str(tmp_path / "nope")).list_files()


def test_shard_writer_is_atomic_and_reports_sha256(tmp_path):
    loc = resolve(str(tmp_path / "out" / "part-00000.parquet"))
    schema = pa.schema([("x", pa.int64())])
    writer = ShardWriter(loc, schema)
    writer.write(pa.table({"x": [1, 2, 3]}))
    assert not loc.exists()  # invisible until committed
    info = writer.commit()
    assert info["rows"] == 3 and info["bytes"] == loc.size()
    assert info["sha256"] == hashlib.sha256(open(loc.path, "rb").read()).hexdigest()
    assert pq.read_table(loc.path).column("x").to_pylist() == [1, 2, 3]

    aborted = resolve(str(tmp_path / "out" / "part-00001.parquet"))
    with pytest.raises(RuntimeError):
        with ShardWriter(aborted, schema) as w:
            w.write(pa.table({"x": [1]}))
            raise RuntimeError("worker failed mid-shard")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00000.parquet"]


def test_s3_roundtrip_against_a_real_s3_server(s3_server):
    root = resolve("s3://winnow-test/run1", S3Config(endpoint_url=s3_server))
    loc = root.join("stage", "part-00000.parquet")
    writer = ShardWriter(loc, pa.schema([("x", pa.int64())]))
    writer.write(pa.table({"x": [7, 8]}))
    info = writer.commit()
    assert loc.exists() and loc.size() == info["bytes"]
    root.join("in", "a.jsonl.gz").write_bytes_atomic(gzip.compress(b"\n".join(LINES)))
    files = root.join("in").list_files("*.jsonl*")
    assert [f.uri for f in files] == ["s3://winnow-test/run1/in/a.jsonl.gz"]
    assert [line for b in iter_jsonl_lines(files[0], 100) for line in b] == LINES


def test_unsupported_scheme():
    with pytest.raises(ValueError, match="unsupported URI scheme 'gs'"):
        resolve("gs://bucket/x")
