"""Every file a stage reads is checked when the stage is built, before any work: a missing, empty or
malformed one is one line naming the stage, the file and what is wrong."""

import json

import pytest
import yaml

from conftest import REPO, data_path
from winnow.flows.curate import InputError, list_input_shards
from winnow.schemas.config import parse_config
from winnow.stages import StageFileError
from winnow.stages.color_filter import ColorFilter, ColorFilterConfig
from winnow.stages.decontaminate import Decontaminate, DecontaminateConfig
from winnow.stages.langid import LangId, LangIdConfig
from winnow.stages.quality import Quality, QualityConfig
from winnow.stages.tokenize import Tokenize, TokenizeConfig
from winnow.stages.url_filter import UrlFilter, UrlFilterConfig


def one_line_error(build, stage: str, path, says: str) -> None:
    with pytest.raises(StageFileError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"stage {stage!r}: {path}: ") and says in message, message


@pytest.mark.parametrize("content,says", [
    ("", "the benchmark file is empty"),
    ("this is not json\n", "cannot read benchmark items"),
    ('{"query": "Q", "choices": ["a"], "gold": 0}\n{"query": \n', "cannot read benchmark items"),
    ('{"title": "no text fields"}\n', "cannot read benchmark items: ValueError"),
])
def test_a_bad_benchmark_file(tmp_path, content, says):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(content)
    one_line_error(lambda: Decontaminate(DecontaminateConfig(benchmarks=[{"path": str(bench)}])),
                   "decontaminate", bench, says)


def test_a_missing_benchmark_file_is_named_next_to_a_good_one(tmp_path):
    good = str(data_path("reference/llmfoundry_eval_local_data/copa.jsonl.gz"))
    missing = tmp_path / "gone.jsonl"
    one_line_error(lambda: Decontaminate(DecontaminateConfig(benchmarks=[{"path": good}, {"path": str(missing)}])),
                   "decontaminate", missing, "the benchmark file does not exist")


def test_a_missing_or_empty_blocklist(tmp_path):
    missing = tmp_path / "lists" / "adult.txt"
    one_line_error(lambda: UrlFilter(UrlFilterConfig(blocklists=[str(missing)])), "url_filter", missing,
                   "the blocklist does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line_error(lambda: UrlFilter(UrlFilterConfig(blocklists=[str(empty)])), "url_filter", empty,
                   "the blocklist is empty")


def test_scorer_models_that_are_missing_or_not_what_the_config_says(tmp_path):
    fake = tmp_path / "model.bin"
    fake.write_bytes(b"PK\x03\x04 a zip file, not fastText")
    for path, says in [(tmp_path / "none.bin", "the fastText model does not exist"),
                       (fake, "not a fastText model")]:
        one_line_error(lambda p=path: Quality(QualityConfig(scorer={"model": str(p)}, threshold=0.5)), "quality",
                       path, says)
    (tmp_path / "hf").mkdir()
    one_line_error(lambda: Quality(QualityConfig(scorer={"model": str(tmp_path / "hf"), "kind": "transformer"},
                                                 threshold=0.5)), "quality", tmp_path / "hf", "no config.json")
    (tmp_path / "hf" / "config.json").write_text("{not json")
    one_line_error(lambda: Quality(QualityConfig(scorer={"model": str(tmp_path / "hf"), "kind": "transformer"},
                                                 keep_top=0.5)), "quality", tmp_path / "hf", "not valid JSON")
    one_line_error(lambda: LangId(LangIdConfig(model=str(fake))), "langid", fake, "not a fastText model")
    one_line_error(lambda: ColorFilter(ColorFilterConfig(prior=str(tmp_path / "prior"), conditional=str(tmp_path))),
                   "color_filter", tmp_path / "prior", "does not exist")


def test_a_broken_tokenizer(tmp_path):
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"version": "1.0", "model": ')
    one_line_error(lambda: Tokenize(TokenizeConfig(tokenizer=str(broken))), "tokenize", broken,
                   "cannot load the tokenizer")
    one_line_error(lambda: Tokenize(TokenizeConfig(tokenizer=str(tmp_path / "nothing"))), "tokenize",
                   tmp_path / "nothing", "cannot load the tokenizer: no tokenizer.json")


@pytest.mark.parametrize("name,content,says", [
    ("state.json", "{'_data_files': []}", "not valid JSON (Expecting property name enclosed in double quotes"),
    ("state.json", '{"fingerprint": "x"}', "no '_data_files' in it"),
    ("dataset_dict.json", "[1, 2", "not valid JSON"),
])
def test_a_broken_datasets_directory_names_its_metadata_file(tmp_path, name, content, says):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / name).write_text(content)
    config = parse_config({"input": {"uri": str(tmp_path / "ds")}, "output": str(tmp_path / "out"),
                           "stages": [{"name": "ingest"}]})
    with pytest.raises(InputError) as caught:
        list_input_shards(config)
    assert str(caught.value).startswith(f"{tmp_path / 'ds' / name}: ") and says in str(caught.value)


@pytest.mark.usefixtures("session_prefect_api")
def test_winnow_run_stops_before_any_work_on_a_missing_blocklist(tmp_path):
    """The new user's case: the run used to ingest everything, then fail inside a Ray task."""
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"text": "hello world", "url": "https://a.example"}) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"),
                                      "stages": [{"name": "ingest"},
                                                 {"name": "url_filter", "blocklists": [str(tmp_path / "nope.txt")]}]}))
    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "run", str(config)], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: stage 'url_filter': {tmp_path / 'nope.txt'}: the blocklist does not exist" in \
        " ".join(result.stdout.split())
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out" / "ingest").exists()  # nothing ran
