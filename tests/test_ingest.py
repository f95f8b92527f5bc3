import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import data_path, write_jsonl
from winnow.schemas.config import InputConfig
from winnow.schemas.documents import validate_documents
from winnow.stages.base import RunContext
from winnow.stages.ingest import Ingest, IngestConfig, MissingColumnError
from winnow.storage.fs import resolve
from winnow.storage.shards import CorruptInputError


def ingest(path, root, batch_size=100, **input_kwargs):
    stage = Ingest(IngestConfig(**input_kwargs.pop("ingest", {})),
                   RunContext(input=InputConfig(uri=str(root), **input_kwargs), input_root=str(root)))
    results = list(stage.process_shard(resolve(str(path)), batch_size))
    kept = pa.concat_tables([r.kept for r in results])
    rejects = pa.concat_tables([r.rejects for r in results])
    assert sum(r.rows_in for r in results) == kept.num_rows + rejects.num_rows
    validate_documents(kept)
    return kept, rejects


def test_every_kind_of_malformed_row_is_rejected_with_its_reason(tmp_path):
    lines = [
        b'{"text": "A good document.", "url": "https://a.test/1", "lang": "en"}',
        b'{"text": "truncated json',
        b'{"url": "https://a.test/no-text"}',
        b'{"text": ["a", "list"]}',
        b'{"text": "  \\n "}',
        b'[1, 2, 3]',
        b'{"text": "caf\xe9 latin-1 bytes"}',
        b'{"text": "lone \\udc00 surrogate"}',
        b"",
        json.dumps({"text": "x" * 2000}).encode(),
    ]
    kept, rejects = ingest(write_jsonl(tmp_path / "in" / "a.jsonl", lines), tmp_path / "in",
                           ingest={"max_doc_bytes": 1000})
    assert kept.column("text").to_pylist() == ["A good document."]
    assert kept.column("id").to_pylist() == ["a.jsonl:0"]
    assert kept.column("url").to_pylist() == ["https://a.test/1"]
    assert json.loads(kept.column("meta")[0].as_py()) == {"lang": "en"}
    reasons = rejects.column("reject_reason").to_pylist()
    assert reasons == ["invalid_json", "missing_text", "text_not_string", "empty_text", "not_an_object",
                       "invalid_utf8", "invalid_utf8", "invalid_json", "too_long"]
    assert rejects.column("id").to_pylist()[0] == "a.jsonl:1"
    # the undecodable bytes are kept, so nothing is lost
    assert rejects.column("raw").to_pylist()[5] == b'{"text": "caf\xe9 latin-1 bytes"}'
    assert "2000 bytes > max_doc_bytes 1000" in rejects.column("reject_detail").to_pylist()[-1]
    assert set(rejects.column("reject_stage").to_pylist()) == {"ingest"}


def test_ids_are_stable_and_text_is_nfc(tmp_path):
    decomposed = "Cafe\u0301 au lait is a coffee drink."
    path = write_jsonl(tmp_path / "d" / "x.jsonl", [json.dumps({"text": decomposed})])
    first, _ = ingest(path, tmp_path / "d")
    again, _ = ingest(path, tmp_path / "d")
    assert first.column("id").to_pylist() == again.column("id").to_pylist() == ["x.jsonl:0"]
    assert first.column("text")[0].as_py() == "Caf\u00e9 au lait is a coffee drink."


def test_input_ids_and_duplicate_ids(tmp_path):
    lines = [json.dumps({"doc_id": 7, "text": "one"}), json.dumps({"doc_id": 7, "text": "two"}),
             json.dumps({"text": "three"})]
    kept, rejects = ingest(write_jsonl(tmp_path / "x.jsonl", lines), tmp_path, id_field="doc_id")
    assert kept.column("id").to_pylist() == ["7"]
    assert rejects.column("reject_reason").to_pylist() == ["duplicate_id", "missing_id"]
    assert rejects.column("text").to_pylist() == ["two", "three"]


def test_truncated_gzip_keeps_what_was_read_and_rejects_the_rest(tmp_path):
    data = gzip.compress(b"\n".join(json.dumps({"text": f"document number {i}"}).encode() for i in range(20000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    kept, rejects = ingest(path, tmp_path, batch_size=1000)
    assert 0 < kept.num_rows < 20000
    assert rejects.column("reject_reason").to_pylist() == ["corrupt_file"]
    assert f"rows from {kept.num_rows} on could not be read" in rejects.column("reject_detail")[0].as_py()
    with pytest.raises(CorruptInputError, match="cut.jsonl.gz"):
        ingest(path, tmp_path, ingest={"on_corrupt_file": "fail"})


def test_parquet_input_and_missing_text_column(tmp_path):
    pq.write_table(pa.table({"contents": ["Some text here.", None], "n": [1, 2]}), tmp_path / "a.parquet")
    kept, rejects = ingest(tmp_path / "a.parquet", tmp_path, text_field="contents")
    assert kept.column("text").to_pylist() == ["Some text here."]
    assert json.loads(kept.column("meta")[0].as_py()) == {"n": 1}
    assert rejects.column("reject_reason").to_pylist() == ["missing_text"]
    with pytest.raises(MissingColumnError,
                       match=r"no column 'text' \(columns: \['contents', 'n'\]\); set input.text_field"):
        ingest(tmp_path / "a.parquet", tmp_path)


def test_real_web_samples(tmp_path):
    c4 = data_path("web/c4_sample.jsonl.gz")
    kept, rejects = ingest(c4, c4.parent, batch_size=256)
    assert kept.num_rows == 1000 and rejects.num_rows == 0
    assert kept.column("url")[0].as_py().startswith("http")
    assert "timestamp" in json.loads(kept.column("meta")[0].as_py())

    pile = data_path("web/toy_pile_data.jsonl.gz")
    kept, rejects = ingest(pile, pile.parent, text_field="contents")
    assert kept.num_rows + rejects.num_rows == 1000 and kept.num_rows > 900
