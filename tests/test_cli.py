import subprocess
import sys

import yaml


def winnow(*args):
    return subprocess.run([sys.executable, "-m", "winnow.flows.cli", *args], capture_output=True, text=True, timeout=120)


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
