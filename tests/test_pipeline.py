"""The curate flow end to end on the demo corpus: local Ray, Prefect's test API, local files."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from winnow.flows.curate import InputError, curate
from winnow.flows.demo import demo_config, write_demo_corpus
from winnow.runtime import StageFailedError
from winnow.storage.fs import resolve
from winnow.storage.manifest import read_kept

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_api")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_demo_corpus(root / "input", seed=1, docs_per_shard=150)
    config = demo_config(str(root / "input"), str(root / "out"))
    return config, curate(config), root / "out"


def test_counts_add_up_for_every_stage_and_chain(demo_run):
    _, summary, out = demo_run
    stages = summary["stages"]
    assert list(stages) == ["ingest", "heuristics", "exact_dedup", "dedup"]
    previous_out = None
    for name, c in stages.items():
        assert c["rows_in"] == c["rows_out"] + c["rows_rejected"]
        assert sum(c["rejected_by_reason"].values()) == c["rows_rejected"]
        assert c["rows_out"] > 0 and c["rows_rejected"] > 0, name  # every stage has real work
        if previous_out is not None:
            assert c["rows_in"] == previous_out
        previous_out = c["rows_out"]
        manifest = json.loads((out / name / "_manifest.json").read_text())
        assert manifest["rows_in"] == c["rows_in"] and len(manifest["shards"]) == 5
        # a segment (ingest+heuristics, exact_dedup+dedup) writes its last stage's documents only
        assert manifest["kept"] == ("written" if name in ("heuristics", "dedup") else "fused")
        for shard in manifest["shards"]:
            assert (shard["output"] is not None) == (manifest["kept"] == "written")
            if shard["output"]:
                path = out / name / shard["output"]["path"]
                assert pq.read_metadata(path).num_rows == shard["rows_out"]
                assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["output"]["sha256"]
            if shard["rejects"]:
                rejects = pq.read_table(out / name / shard["rejects"]["path"])
                assert rejects.num_rows == shard["rows_rejected"]
                assert set(rejects.column("reject_stage").to_pylist()) == {name}
    assert {"invalid_json", "invalid_utf8", "too_long", "missing_text", "not_a_response", "http_status", "not_html",
            "truncated_record"} <= set(stages["ingest"]["rejected_by_reason"])  # JSONL lines and WARC records
    assert stages["exact_dedup"]["extra"]["duplicate_groups"] > 0
    # a global stage's plan (map, shuffle, reduce) is timed apart from its share of the segment's tasks
    for name in ("exact_dedup", "dedup"):
        assert 0 < stages[name]["extra"]["plan_seconds"] <= stages[name]["seconds"]


def test_exact_duplicates_are_gone_and_rejects_name_the_survivor(demo_run):
    _, _, out = demo_run
    kept = read_kept(resolve(str(out)), "exact_dedup", ["id", "text"])
    assert kept.num_rows == json.loads((out / "exact_dedup" / "_manifest.json").read_text())["rows_out"]
    texts = kept.column("text").to_pylist()
    assert len(set(texts)) == len(texts)
    assert len(set(kept.column("id").to_pylist())) == kept.num_rows
    rejects = pq.read_table(out / "exact_dedup" / "rejects")
    survivors = {d.removeprefix("duplicate of ") for d in rejects.column("reject_detail").to_pylist()}
    assert survivors <= set(kept.column("id").to_pylist())


def test_rerun_skips_and_a_changed_stage_invalidates_it_and_later_ones(demo_run):
    config, _, out = demo_run
    before = {p: p.read_bytes() for p in out.glob("*/**/part-*.parquet")}
    again = curate(config)
    assert all(c["skipped"] for c in again["stages"].values())
    # a change to exact_dedup re-runs its segment (exact_dedup+dedup), not the one before it
    changed = {**config, "stages": [{"name": "ingest"}, {"name": "heuristics"},
                                    {"name": "exact_dedup", "normalize": "none"}, {"name": "dedup"}]}
    result = curate(changed)
    assert [c["skipped"] for c in result["stages"].values()] == [True, True, False, False]
    assert all(before[p] == p.read_bytes() for p in out.glob("heuristics/**/part-*.parquet"))
    assert all(before[p] == p.read_bytes() for p in out.glob("ingest/**/part-*.parquet"))
    # without whitespace normalisation fewer texts are identical
    assert result["stages"]["exact_dedup"]["rows_out"] >= again["stages"]["exact_dedup"]["rows_out"]
    curate(config)  # back to the module's config for the other tests


def test_a_failing_shard_is_named_with_its_cause(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", ['{"text": "fine"}'])
    pq.write_table(pa.table({"body": ["no text column here"]}), tmp_path / "in" / "b.parquet")
    config = {"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"),
              "stages": [{"name": "ingest"}], "runtime": {"max_retries": 0, "progress": False}}
    with pytest.raises(StageFailedError) as err:
        curate(config)
    message = str(err.value)
    assert "stage 'ingest' failed on shard part-00001" in message and "b.parquet" in message
    assert "MissingColumnError" in message and "set input.text_field" in message
    assert not (tmp_path / "out" / "ingest" / "part-00001.parquet").exists()


def test_no_matching_input_fails_before_any_work(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an input")
    config = {"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"), "stages": [{"name": "ingest"}]}
    with pytest.raises(InputError, match="no input files match"):
        curate(config)
    with pytest.raises(InputError, match="input not found"):
        curate({**config, "input": {"uri": str(tmp_path / "missing")}})
    assert not (tmp_path / "out").exists()
