"""The demo runs every stage family with work to do, and `winnow inspect` shows samples from the run
and one document's path through the stages."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

FAMILIES = ["ingest", "url_filter", "heuristics", "exact_dedup", "dedup", "paragraph_dedup", "decontaminate",
            "quality", "toxicity", "preselect", "color_filter", "rephrase", "pii", "tokenize", "pack"]


def inspect(out, *args) -> str:
    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "inspect", str(out), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def rejects(out, stage):
    return pq.read_table(out / stage / "rejects").to_pylist()


def test_demo_runs_every_stage_family_and_each_keeps_and_drops(mission_demo):
    summary, _ = mission_demo
    stages = summary["stages"]
    assert [name for name in stages if name != "langid"] == FAMILIES
    for name, c in stages.items():
        assert c["rows_out"] > 0, name
        if name == "rephrase":
            assert c["rows_added"] > 0  # synthetic rows made
        elif name == "pii":  # it redacts, and drops nothing
            assert c["counters"]["pii_email"] > 0 and c["counters"]["pii_phone"] > 0
        elif name != "pack":  # pack lays documents into sequences and has no rule that drops one
            assert c["rows_rejected"] > 0, name
    # the planted problems reach the stage made for them
    assert set(stages["url_filter"]["rejected_by_reason"]) == {"blocklist:blocklist.txt"}
    assert set(stages["decontaminate"]["rejected_by_reason"]) == {"contaminated:benchmark"}
    assert {"not_a_response", "http_status", "not_html", "truncated_record"} <= set(
        stages["ingest"]["rejected_by_reason"])  # the WARC shard's records that are not pages
    assert set(stages["quality"]["rejected_by_reason"]) == {"below_threshold"}
    assert stages["toxicity"]["rejected_by_reason"].get("toxic:toxic", 0) > 0
    # CoLoR-Filter keeps its target domain: astronomy articles are a far larger share of what it kept
    astronomy = ("galaxies", "telescope", "comet", "lunar", "star clusters", "planet orbits", "meteor", "solar",
                 "nebula", "eclipse", "observatory", "red giants")
    share = lambda texts: sum(any(w in t for w in astronomy) for t in texts) / len(texts)  # noqa: E731
    out = mission_demo[1]
    dropped = [r["text"] for r in rejects(out, "color_filter")]
    kept = [r["text"] for r in pq.read_table(out / "tokenize", columns=["text", "rephrase_of"]).to_pylist()
            if r["rephrase_of"] is None]
    assert share(kept) > 2 * share(dropped) and share(kept) > 0.3

@pytest.mark.parametrize("stage", ["exact_dedup", "toxicity", "color_filter"])
def test_id_traces_a_document_to_the_stage_that_dropped_it(mission_demo, stage):
    summary, out = mission_demo
    row = rejects(out, stage)[0]
    lines = inspect(out, "--id", row["id"]).splitlines()
    assert lines[0] == f"{row['id']} (source {row['source']})"
    order = list(summary["stages"])
    steps = [line.split() for line in lines[1:1 + order.index(stage) + 1]]
    assert [s[0] for s in steps] == order[: order.index(stage) + 1]
    assert all(s[1] == "kept" for s in steps[:-1]) and steps[-1][1] == "dropped"
    assert f"{row['reject_reason']}: {row['reject_detail']}" in lines[1 + order.index(stage)]
    assert not any(line.split()[0] in order[order.index(stage) + 1:] for line in lines[1:] if line.strip())
    assert lines[-1].startswith("  text: " + " ".join(row["text"].split())[:40])


def test_id_of_a_document_kept_to_the_end_and_of_none(mission_demo, tmp_path):
    summary, out = mission_demo
    kept = pq.read_table(out / "tokenize" / "part-00000.parquet", columns=["id", "dup_cluster"]).to_pylist()[0]
    text = inspect(out, "--id", kept["id"])
    assert all(f"{name}" in text for name in summary["stages"]) and "dropped" not in text
    assert f"dup_cluster={kept['dup_cluster']}" in text  # which cluster it joined
    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "inspect", str(out), "--id", "no-such-id"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no document 'no-such-id'" in result.stdout


def test_samples_per_reason_and_kept(mission_demo):
    _, out = mission_demo
    reasons = {r["reject_reason"] for r in rejects(out, "heuristics")}
    text = inspect(out, "--stage", "heuristics", "-n", "2")
    shown = [line.split("]")[0].strip(" [") for line in text.splitlines() if line.startswith("  [")]
    assert set(shown) == reasons and all(shown.count(r) <= 2 for r in reasons)
    reason = sorted(reasons)[0]
    text = inspect(out, "--stage", "heuristics", "--reason", reason, "-n", "1")
    assert [line for line in text.splitlines() if line.startswith("  [")][0].startswith(f"  [{reason}]")
    kept_ids = set(pq.read_table(out / "tokenize", columns=["id"]).column("id").to_pylist())
    text = inspect(out, "--stage", "color_filter", "--kept", "-n", "3")
    ids = [line.split()[1] for line in text.splitlines() if line.startswith("  [kept]")]
    assert len(ids) == 3 and set(ids) <= kept_ids and "color_score=" in text


def test_an_unfinished_run_lists_its_stages_in_the_config_order(mission_demo, tmp_path):
    """Without `_run.json` (a run still going, or killed) the stages read in the order they ran, not by name."""
    import shutil

    from winnow.flows.inspect import run_stages
    from winnow.flows.report import build_report
    from winnow.storage.fs import resolve

    summary, out = mission_demo
    copy = tmp_path / "unfinished"
    shutil.copytree(out, copy)
    (copy / "_run.json").unlink()
    order = list(summary["stages"])
    assert order != sorted(order)
    assert run_stages(resolve(str(copy))) == order
    funnel = build_report(resolve(str(copy))).split('id="funnel"')[1].split("</table>")[0]
    assert [row.split('"')[0] for row in funnel.split('data-stage="')[1:]] == order
