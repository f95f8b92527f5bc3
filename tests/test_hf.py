"""Hugging Face datasets in and out: what `datasets` writes, winnow reads; what winnow writes,
`datasets` reads, with the same rows."""

import json

import pyarrow as pa
import pytest

from winnow.flows.curate import InputError, curate, list_input_shards
from winnow.schemas.config import parse_config
from winnow.stages.base import RunContext
from winnow.stages.ingest import Ingest, IngestConfig
from winnow.storage.fs import resolve
from winnow.storage.manifest import read_kept

datasets = pytest.importorskip("datasets", reason="the round trip needs the datasets package (dev extra)")

TEXTS = [f"Document number {i} talks about {topic} in some detail." for i, topic in
         enumerate(["gardens", "rivers", "trains", "bread", "stars", "maps", "bees", "clocks", "ships", "tea"])]


def sample(n: int, offset: int = 0) -> "datasets.Dataset":
    rows = [{"id": f"doc-{offset + i}", "text": TEXTS[(offset + i) % len(TEXTS)] + f" ({offset + i})",
             "url": f"https://example.test/{offset + i}", "score": float(i) / 10, "tags": ["a"] * (i % 3)}
            for i in range(n)]
    return datasets.Dataset.from_list(rows)


def config(uri, out, **input_fields) -> dict:
    return {"input": {"uri": str(uri), "id_field": "id", **input_fields}, "output": str(out),
            "runtime": {"num_cpus": 2, "progress": False}, "stages": [{"name": "ingest"}]}


def ingest_all(cfg: dict) -> list[dict]:
    """Every document ingest makes of the configured input, file by file."""
    run_config = parse_config(cfg)
    root, shards = list_input_shards(run_config)
    stage = Ingest(IngestConfig(), RunContext(input=run_config.input, input_root=root.uri))
    return [row for s in shards for r in stage.process_shard(s.source, 100) for row in r.kept.to_pylist()]


@pytest.mark.usefixtures("ray_local", "prefect_api")
def test_a_saved_dataset_runs_through_winnow_run_and_its_hf_output_loads_with_the_same_rows(tmp_path):
    dataset = datasets.concatenate_datasets([sample(30), sample(30, offset=30)])
    dataset = dataset.add_item({"id": "dup", "text": dataset[0]["text"], "url": None, "score": 0.0, "tags": []})
    dataset.save_to_disk(str(tmp_path / "in"), num_shards=2)  # two Arrow files: two winnow shards
    cfg = config(tmp_path / "in", tmp_path / "out", source="sample")
    cfg["stages"].append({"name": "exact_dedup"})
    cfg["output_format"] = "hf"

    summary = curate(cfg)
    assert summary["stages"]["ingest"]["rows_out"] == 61 and summary["stages"]["ingest"]["shards"] == 2
    assert summary["stages"]["exact_dedup"]["rows_out"] == 60  # the planted copy goes
    assert summary["hf_dataset"] == str(tmp_path / "out" / "hf")

    loaded = datasets.load_from_disk(str(tmp_path / "out" / "hf"))
    assert isinstance(loaded, datasets.Dataset)
    columns = ["id", "text", "source", "url", "meta"]
    assert loaded.column_names == columns
    expected = read_kept(resolve(str(tmp_path / "out")), "exact_dedup", columns)  # the final documents, in order
    assert loaded.num_rows == 60
    assert loaded.to_list() == expected.to_pylist()
    # load_dataset refuses a save_to_disk directory, but its generic Arrow builder reads the same files
    generic = datasets.load_dataset("arrow", data_files=str(tmp_path / "out" / "hf" / "data-*.arrow"), split="train",
                                    cache_dir=str(tmp_path / "cache"))
    assert generic.to_list() == expected.to_pylist()
    # and they are the input's rows: ids, texts, urls, the other fields in meta
    original = {row["id"]: row for row in dataset.to_list()}
    for row in loaded:
        source = original[row["id"]]
        assert (row["text"], row["url"], row["source"]) == (source["text"], source["url"], "sample")
        assert json.loads(row["meta"]) == {"score": source["score"], "tags": source["tags"]}


def test_a_saved_dataset_dict_reads_one_split_or_all(tmp_path):
    datasets.DatasetDict({"train": sample(20), "test": sample(5, offset=100)}).save_to_disk(str(tmp_path / "dd"))
    loaded = datasets.load_from_disk(str(tmp_path / "dd"))

    test_docs = ingest_all(config(tmp_path / "dd", tmp_path / "out", split="test"))
    assert [(d["id"], d["text"]) for d in test_docs] == [(r["id"], r["text"]) for r in loaded["test"]]
    every = ingest_all(config(tmp_path / "dd", tmp_path / "out"))
    assert sorted(d["id"] for d in every) == sorted(r["id"] for s in ("train", "test") for r in loaded[s])
    with pytest.raises(InputError, match=r"no split 'validation' \(splits: train, test\)"):
        ingest_all(config(tmp_path / "dd", tmp_path / "out", split="validation"))


def test_a_hub_layout_directory_reads_the_files_its_card_gives_each_split(tmp_path):
    root = tmp_path / "hub"
    (root / "data").mkdir(parents=True)
    sample(12).to_parquet(str(root / "data" / "train-00000-of-00002.parquet"))
    sample(8, offset=12).to_parquet(str(root / "data" / "train-00001-of-00002.parquet"))
    sample(6, offset=50).to_parquet(str(root / "data" / "validation-00000-of-00001.parquet"))
    sample(4, offset=90).to_parquet(str(root / "data" / "notes-extra.parquet"))  # in no split of the card
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
        "  - split: validation\n    path: data/validation-*\n---\n# A dataset\n")

    for split, size in (("train", 20), ("validation", 6)):
        reference = datasets.load_dataset(str(root), split=split, cache_dir=str(tmp_path / "cache"))
        docs = ingest_all(config(root, tmp_path / "out", split=split))
        assert len(docs) == size
        assert [(d["id"], d["text"], d["url"]) for d in docs] == [(r["id"], r["text"], r["url"]) for r in reference]
    with pytest.raises(InputError, match="no config 'other'"):
        ingest_all(config(root, tmp_path / "out", dataset_config="other"))

    # without `configs:` a file's split is a word of its path, as on the Hub
    (root / "README.md").write_text("# A dataset with no YAML header\n")
    reference = datasets.load_dataset(str(root), data_files={"validation": "data/validation-*"},
                                      split="validation", cache_dir=str(tmp_path / "cache"))
    docs = ingest_all(config(root, tmp_path / "out", split="validation"))
    assert [d["id"] for d in docs] == [r["id"] for r in reference]
    # and with no split asked for, it is a directory like any other: `input.glob` chooses
    docs = ingest_all(config(root, tmp_path / "out", glob="*-00000-of-*"))
    expected = [f"doc-{i}" for i in range(12)] + [f"doc-{50 + i}" for i in range(6)]
    assert sorted(d["id"] for d in docs) == sorted(expected)


def test_split_is_refused_for_a_plain_directory(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(InputError, match="for Hugging Face datasets directories"):
        ingest_all(config(tmp_path, tmp_path / "out", split="train"))


def test_arrow_files_in_stream_and_file_format(tmp_path):
    table = pa.table({"text": ["one text", "two texts"], "n": [1, 2]})
    with pa.ipc.new_file(str(tmp_path / "a.arrow"), table.schema) as writer:
        writer.write_table(table)
    with pa.ipc.new_stream(str(tmp_path / "b.arrow"), table.schema) as writer:
        writer.write_table(table)
    docs = ingest_all({"input": {"uri": str(tmp_path)}, "output": str(tmp_path / "out"),
                       "stages": [{"name": "ingest"}]})
    assert [(d["text"], json.loads(d["meta"])) for d in docs] == [("one text", {"n": 1}), ("two texts", {"n": 2})] * 2
