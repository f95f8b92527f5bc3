import pytest

from winnow.schemas.config import ConfigError, load_config, parse_config

BASE = {"input": {"uri": "/data"}, "output": "/out", "stages": [{"name": "ingest"}, {"name": "heuristics"}]}


def with_stages(*stages, **top):
    return {**BASE, "stages": [{"name": "ingest"}, *stages], **top}


def test_valid_config_has_published_defaults():
    config = parse_config(BASE)
    heuristics = config.stages[1]
    assert heuristics.gopher_quality.min_doc_words == 50
    assert heuristics.gopher_repetition.dup_n_grams[5] == 0.15
    assert heuristics.fineweb.short_line_thr == 0.67
    assert config.stages[0].max_doc_bytes == 1_000_000


def test_unknown_stage_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        parse_config(with_stages({"name": "dedupe"}))
    message = str(err.value)
    assert "stages.1" in message and "'dedupe'" in message
    assert "'heuristics'" in message and "'exact_dedup'" in message


def test_misspelt_key_names_the_key_and_suggests():
    with pytest.raises(ConfigError) as err:
        parse_config(with_stages({"name": "heuristics", "gopher_quality": {"min_doc_word": 10}}))
    message = str(err.value)
    assert "stages.1.heuristics.gopher_quality" in message
    assert "'min_doc_word'" in message and "did you mean 'min_doc_words'" in message
    assert "max_avg_word_length" in message  # the allowed keys are listed


def test_misspelt_top_level_key():
    with pytest.raises(ConfigError, match="unknown key 'stage'; did you mean 'stages'"):
        parse_config({"input": {"uri": "/d"}, "output": "/o", "stage": []})


def test_threshold_out_of_range():
    with pytest.raises(ConfigError) as err:
        parse_config(with_stages({"name": "heuristics", "fineweb": {"short_line_thr": 1.5}}))
    assert "stages.1.heuristics.fineweb.short_line_thr" in str(err.value)
    assert "less than or equal to 1" in str(err.value)


def test_missing_input():
    with pytest.raises(ConfigError, match="input: required key is missing"):
        parse_config({"output": "/o", "stages": [{"name": "ingest"}]})


def test_first_stage_must_be_ingest_and_stages_unique():
    with pytest.raises(ConfigError, match="first stage must be 'ingest'"):
        parse_config({**BASE, "stages": [{"name": "heuristics"}]})
    with pytest.raises(ConfigError, match="more than once: heuristics"):
        parse_config(with_stages({"name": "heuristics"}, {"name": "heuristics"}))


def test_stage_hashes_chain():
    a = parse_config(with_stages({"name": "heuristics"}, {"name": "exact_dedup"})).stage_hashes("files")
    b = parse_config(with_stages({"name": "heuristics", "c4": {"enabled": False}}, {"name": "exact_dedup"}))
    b = b.stage_hashes("files")
    assert a["ingest"] == b["ingest"]
    assert a["heuristics"] != b["heuristics"] and a["exact_dedup"] != b["exact_dedup"]
    base = parse_config(BASE)
    assert base.stage_hashes("other files")["ingest"] != base.stage_hashes("files")["ingest"]


def test_secrets_are_not_dumped():
    config = parse_config({**BASE, "storage": {"s3": {"access_key_id": "AKIAXXX", "secret_access_key": "s3cr3t"}}})
    dumped = config.model_dump_json()
    assert "s3cr3t" not in dumped and "AKIAXXX" not in dumped and "s3cr3t" not in repr(config)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_output_fields_index_and_new_only():
    base = {"input": {"uri": "/data"}, "stages": [{"name": "ingest"}]}
    config = parse_config({**base, "output": "s3://b/nightly/{date}/{run_id}", "index": "s3://b/index"})
    assert config.output_for("r1", "2026-12-05") == "s3://b/nightly/2026-12-05/r1"
    assert config.index.uri == "s3://b/index" and config.index.partitions == 32
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \{day\}"):
        parse_config({**base, "output": "/out/{day}"})
    with pytest.raises(ConfigError, match="needs a run index"):
        parse_config({**base, "output": "/out", "input": {"uri": "/data", "new_only": True}})
    with pytest.raises(ConfigError, match="power of two"):
        parse_config({**base, "output": "/out", "index": {"uri": "/index", "partitions": 24}})
