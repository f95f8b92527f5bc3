import subprocess
import sys

import yaml


def winnow(*args):
    return subprocess.run([sys.executable, "-m", "winnow.flows.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_bad_config_is_a_clear_error_not_a_traceback(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"input": {"uri": str(tmp_path)}, "output": str(tmp_path / "o"),
                                      "stages": [{"name": "ingest"}, {"name": "heuristic"}]}))
    result = winnow("run", str(config))
    assert result.returncode == 2
    assert "error: invalid config" in result.stdout and "stages.1" in result.stdout and "'heuristics'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_lists_input(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "x"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "o"),
                                      "stages": [{"name": "ingest"}]}))
    result = winnow("validate", str(config))
    assert result.returncode == 0 and "1 input shards" in result.stdout
    config.write_text(yaml.safe_dump({"input": {"uri": str(tmp_path / "none")}, "output": "o",
                                      "stages": [{"name": "ingest"}]}))
    result = winnow("validate", str(config))
    assert result.returncode == 2 and "input not found" in result.stdout


def test_train_has_one_sub_command_per_model_with_its_own_flags(tmp_path):
    data = tmp_path / "text.jsonl"
    data.write_text("\n".join(f'{{"text": "document number {i} about gardens and tomato plants"}}'
                              for i in range(200)))
    result = winnow("train", "tokenizer", "--data", str(data), "--vocab-size", "300", "--out", str(tmp_path / "bpe"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "bpe" / "tokenizer.json").is_file()
    # flags of other models are not accepted: fastText's --word-ngrams means nothing to an LM
    wrong = winnow("train", "lm", "--data", str(data), "--word-ngrams", "2", "--out", str(tmp_path / "lm"))
    assert wrong.returncode == 2 and "unrecognized arguments: --word-ngrams" in wrong.stderr
    assert "--warmup-steps" in winnow("train", "lm", "--help").stdout
    assert "--warmup-steps" not in winnow("train", "quality", "--help").stdout
    # `run --resume` did nothing (resuming is what every run does) and is gone
    assert "unrecognized arguments: --resume" in winnow("run", "c.yaml", "--resume").stderr
