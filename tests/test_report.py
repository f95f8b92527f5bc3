"""The run report: written by every run, every stage with its counts, plots with thresholds, and
it renders in headless Chromium without console errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from winnow.flows.curate import curate
from winnow.flows.demo import demo_config, demo_tokenizer, write_demo_corpus

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_api")


class FunnelParser(HTMLParser):
    """Rows of the funnel table: stage -> {in, made, kept, rejected} as integers."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, int]] = {}
        self._stage = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-stage" in attrs:
            self._stage = attrs["data-stage"]
            self.rows[self._stage] = {}
        elif tag == "td" and self._stage and attrs.get("class") in ("in", "made", "kept", "rejected"):
            self._cell = attrs["class"]

    def handle_data(self, data):
        if self._cell:
            self.rows[self._stage][self._cell] = int(data.replace(",", ""))
            self._cell = None

    def handle_endtag(self, tag):
        if tag == "tr":
            self._stage = None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from winnow.stages.langid import default_lid_model

    root = tmp_path_factory.mktemp("report")
    write_demo_corpus(root / "input", seed=2, docs_per_shard=150)
    tokenizer = demo_tokenizer(root / "bpe", seed=2)
    try:
        default_lid_model()
        langid = True
    except FileNotFoundError:
        langid = False
    summary = curate(demo_config(str(root / "input"), str(root / "out"), tokenizer, langid))
    return summary, root / "out", langid


def test_every_stage_appears_with_its_counts(run):
    summary, out, langid = run
    assert summary["report"] == str(out / "report.html")
    page = (out / "report.html").read_text()
    parser = FunnelParser()
    parser.feed(page)
    assert list(parser.rows) == list(summary["stages"])
    for name, counts in summary["stages"].items():
        manifest = json.loads((out / name / "_manifest.json").read_text())
        assert parser.rows[name] == {"in": manifest["rows_in"], "made": manifest["rows_added"],
                                     "kept": manifest["rows_out"], "rejected": manifest["rows_rejected"]}, name
        for reason, n in counts["rejected_by_reason"].items():
            assert f"{reason} {n:,}" in page
    pack = summary["stages"]["pack"]["extra"]
    assert f"efficiency {1 - pack['padding_fraction']:.2%}" in page
    assert "documents per near-duplicate cluster" in page and "tokens per document" in page
    if langid:
        assert "langid: lang_score" in page and "threshold 0.65" in page  # the threshold drawn on its histogram
    assert "<script" not in page  # self-contained, nothing to execute


def test_report_command_rebuilds_the_same_funnel(run, tmp_path):
    _, out, _ = run
    before = FunnelParser()
    before.feed((out / "report.html").read_text())
    (out / "report.html").unlink()
    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "report", str(out)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    after = FunnelParser()
    after.feed((out / "report.html").read_text())
    assert after.rows == before.rows
    missing = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "report", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no run output" in missing.stdout


def test_report_renders_in_headless_chromium_without_console_errors(run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium); .ci/run installs it")
    _, out, _ = run
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                             "--v=0", f"--screenshot={tmp_path / 'report.png'}", "--window-size=1100,2400",
                             f"file://{out / 'report.html'}"], capture_output=True, text=True, timeout=120)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert (tmp_path / "report.png").stat().st_size > 10_000  # something was drawn
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          f"file://{out / 'report.html'}"], capture_output=True, text=True, timeout=120).stdout
    parser = FunnelParser()
    parser.feed(dom)
    assert list(parser.rows) == list(run[0]["stages"])
