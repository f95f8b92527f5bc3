"""A stage defined outside winnow registers by being defined and runs through `winnow run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from winnow.schemas.config import StageConfig
from winnow.stages import DocumentStage, StageResult
from winnow.stages.base import Plot


# ---- the README's "Writing a stage" example, as it is there
class ShoutConfig(StageConfig):
    name: Literal["shout"] = "shout"        # the stage's name, written once
    min_chars: int = 10


class Shout(DocumentStage):
    """Upper-cases documents of at least `min_chars` characters; rejects the shorter ones."""

    Config = ShoutConfig
    plots = (Plot("n_chars"),)              # histograms for the report (optional)

    def apply(self, table):                 # one Arrow table of documents in, kept + rejects out
        short = pc.less(pc.utf8_length(table["text"]), self.config.min_chars)
        kept = table.filter(pc.invert(short))
        kept = kept.set_column(kept.schema.get_field_index("text"), "text", pc.utf8_upper(kept["text"]))
        kept = kept.append_column("n_chars", pc.utf8_length(kept["text"]))
        dropped = table.filter(short)
        return StageResult.of(self.name, table.num_rows, kept, dropped, ["too_short"] * dropped.num_rows,
                              counters={"shouted": kept.num_rows})  # summed into the manifest
# ----


@pytest.mark.usefixtures("session_prefect_api")
def test_a_stage_defined_in_a_test_runs_through_winnow_run(tmp_path):
    texts = ["a short one", "a document long enough to be shouted", "another long enough document here", "tiny"]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    config = {"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"), "plugins": ["test_plugins"],
              "runtime": {"num_cpus": 1, "progress": False},
              "stages": [{"name": "ingest"}, {"name": "shout", "min_chars": 20}]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "run", str(tmp_path / "run.yaml")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    kept = pq.read_table(tmp_path / "out" / "shout" / "part-00000.parquet").column("text").to_pylist()
    assert sorted(kept) == sorted(t.upper() for t in texts if len(t) >= 20)
    rejects = pq.read_table(tmp_path / "out" / "shout" / "rejects")
    assert rejects.column("reject_reason").to_pylist() == ["too_short", "too_short"]
    manifest = json.loads((tmp_path / "out" / "shout" / "_manifest.json").read_text())
    assert manifest["counters"] == {"shouted": 2}
    report = (tmp_path / "out" / "report.html").read_text()
    assert 'data-stage="shout"' in report and "shout: n_chars" in report  # its row and its histogram
    assert "shouted 2" in result.stdout  # the run table shows the stage's counters


def test_the_readme_shows_the_same_stage():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("### Writing a stage")[1].split("```python\n")[1].split("```")[0]
    here = Path(__file__).read_text().split("# ---- the README's \"Writing a stage\" example, as it is there\n")[1]
    assert here.split("# ----")[0].strip() in example and len(example.splitlines()) <= 40
