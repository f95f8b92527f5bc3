"""The run report: written by every run, every stage with its counts, plots with thresholds, and
it renders in headless Chromium without console errors."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pyarrow.parquet as pq
import pytest

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
def run(mission_demo):
    summary, out = mission_demo
    return summary, out, "langid" in summary["stages"]


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
    for name, column, mark in [("quality", "quality_score", "threshold 0.5"),
                               ("toxicity", "toxicity_score", "toxic 0.5"), ("preselect", "preselect_score", "cut-off"),
                               ("color_filter", "color_score", "cut-off")]:
        chart = page.split(f"<title>{name}: {column}</title>")[1].split("</svg>")[0]
        assert mark in chart, name  # every score's histogram with its threshold or corpus-wide cut-off drawn


def test_samples_and_sources_say_what_each_stage_did(run):
    summary, out, _ = run
    page = (out / "report.html").read_text()
    for name, counts in summary["stages"].items():
        section = page.split(f'id="samples-{name}"')[1].split("</section>")[0]
        for reason in counts["rejected_by_reason"]:
            assert f"<td>{reason}</td>" in section, (name, reason)  # a sample per reason
        assert ("<td>kept</td>" in section) == (counts["rows_out"] > 0), name
    exact = pq.read_table(out / "exact_dedup" / "rejects").to_pylist()[0]
    assert html.escape(exact["reject_detail"]) in page  # the survivor it duplicates
    cut = page.split('id="samples-paragraph_dedup"')[1].split("</section>")[0]
    assert '<tr class="cut">' in cut and "<del>" in cut  # a kept document with what was cut struck out
    from winnow.flows.demo import SIGNUP
    from winnow.storage.fs import resolve
    from winnow.storage.manifest import read_kept

    kept = read_kept(resolve(str(out)), "paragraph_dedup", ["text"])["text"].to_pylist()
    assert sum(SIGNUP in t for t in kept) == 1  # the sign-up paragraph planted in many articles: its first stays
    sources = page.split('id="sources"')[1].split("</table>")[0]
    for name, counts in summary["stages"].items():  # per source, the counts add up to the stage's kept
        assert sum(counts["kept_by_source"].values()) == counts["rows_out"], name
    assert all(f"<td>{source}</td>" in sources for source in summary["stages"]["ingest"]["kept_by_source"])


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
    assert all(f'id="samples-{name}"' in dom for name in run[0]["stages"])  # a sample section per stage
    if os.environ.get("WINNOW_SCREENSHOT"):  # the README's docs/report.png is made from this render
        shutil.copy(tmp_path / "report.png", os.environ["WINNOW_SCREENSHOT"])
