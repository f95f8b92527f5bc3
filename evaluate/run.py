"""`winnow eval run`: how every stage of a finished run treated the documents the user labelled.

Nothing is re-run: a stage's rejects say which documents it dropped and why, and the files holding the
last stage's kept rows say which reached the end (as `winnow inspect --id` reads them). Only the `id`
(and `reject_reason`) columns are read, row group by row group, against the labelled ids held in
memory; text is read only for the few documents shown as samples. A labelled id the run never saw (not
in any stage's rejects nor in the output) is counted as not found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.flows.inspect import ReadCounter, Sample, as_samples, rejects_files, row_groups, run_stages
from winnow.storage.fs import Location
from winnow.storage.manifest import kept_files


@dataclass
class StageTally:
    """What one stage did with the labelled documents that reached it."""

    stage: str
    positives_in: int = 0
    negatives_in: int = 0
    positives_dropped: dict[str, int] = field(default_factory=dict)  # by reason
    negatives_dropped: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)  # positives it dropped

    @property
    def positives_kept(self) -> int:
        return self.positives_in - sum(self.positives_dropped.values())

    @property
    def negatives_kept(self) -> int:
        return self.negatives_in - sum(self.negatives_dropped.values())


def evaluate_run(out: Location, ids: list[str], positive: np.ndarray, samples: int = 3) -> dict:
    """Per stage: labelled positives and negatives in, kept and dropped by reason; the output's precision
    and recall against the labels; the stages that dropped the most positives, with samples."""
    label = dict(zip(ids, positive.tolist(), strict=True))
    wanted = pa.array(list(label), pa.string())

    def labelled(table: pa.Table) -> pa.Array:
        return pc.is_in(base_ids(table.column("id")), value_set=wanted)

    counter = ReadCounter()
    stages = run_stages(out)
    dropped_at: dict[str, tuple[str, str]] = {}  # id -> (stage, reason)
    tallies = []
    for stage in stages:
        tally = StageTally(stage)
        for loc in rejects_files(out, stage):
            for table in row_groups(loc, ["id", "reject_reason"], counter, keep=labelled, more=[]):
                for doc_id, reason in zip(base_ids(table.column("id")).to_pylist(),
                                          table.column("reject_reason").to_pylist(), strict=True):
                    if doc_id in dropped_at:
                        continue  # (a row a stage split and dropped twice counts once)
                    dropped_at[doc_id] = (stage, reason)
                    side = tally.positives_dropped if label[doc_id] else tally.negatives_dropped
                    side[reason] = side.get(reason, 0) + 1
        tallies.append(tally)
    final = set()
    for loc in kept_files(out, stages[-1]) if stages else []:
        for table in row_groups(loc, ["id"], counter, keep=labelled, more=[]):
            final.update(base_ids(table.column("id")).to_pylist())
    final -= set(dropped_at)
    seen = final | set(dropped_at)
    reached = set(seen)
    for tally in tallies:  # each stage saw what was found in the run and not dropped before it
        tally.positives_in = sum(1 for i in reached if label[i])
        tally.negatives_in = len(reached) - tally.positives_in
        reached = {i for i in reached if dropped_at.get(i, ("",))[0] != tally.stage}
    worst = sorted((t for t in tallies if t.positives_dropped), key=lambda t: -sum(t.positives_dropped.values()))
    for tally in worst[:3]:
        tally.samples = _dropped_positives(out, tally.stage, [i for i, (s, _) in dropped_at.items()
                                                             if s == tally.stage and label[i]][:samples])
    kept_pos = sum(1 for i in final if label[i])
    found_pos = sum(1 for i in seen if label[i])
    return {
        "output": out.uri, "labelled": len(ids), "labelled_positive": int(positive.sum()), "found": len(seen),
        "not_found": len(label) - len(seen), "stages": tallies,
        "final": {"kept": len(final), "positives_kept": kept_pos, "negatives_kept": len(final) - kept_pos,
                  "precision": kept_pos / len(final) if final else float("nan"),
                  "recall": kept_pos / found_pos if found_pos else float("nan"),
                  "base_rate": found_pos / len(seen) if seen else float("nan")},
        "worst": [t.stage for t in worst[:3]], "read": counter,
    }


def base_ids(ids: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Document ids without the `#k` a split document's parts carry (`tokenize`)."""
    return pc.replace_substring_regex(ids, r"#[0-9]+$", "")


def _dropped_positives(out: Location, stage: str, ids: list[str]) -> list[Sample]:
    """The rows of `ids` in the stage's rejects, as samples (reason, detail, snippet, annotations)."""
    value_set = pa.array(ids, pa.string())
    found: list[Sample] = []
    for loc in rejects_files(out, stage):
        for table in row_groups(loc, ["id"], keep=lambda t: pc.is_in(base_ids(t.column("id")), value_set=value_set)):
            found += as_samples(stage, table)
        if len(found) >= len(ids):
            break
    return found[: len(ids)]


def stage_rows(result: dict) -> list[tuple]:
    """The per-stage table: positives and negatives in, kept and dropped."""
    return [(t.stage, t.positives_in, t.positives_kept, sum(t.positives_dropped.values()), t.negatives_in,
             t.negatives_kept, sum(t.negatives_dropped.values())) for t in result["stages"]]


def reason_lines(result: dict, top: int = 3) -> list[str]:
    """Per stage that dropped labelled documents, its top reasons for positives and for negatives."""
    def most(reasons: dict[str, int]) -> str:
        return ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:top]) or "-"

    return [f"{t.stage}: positives dropped by {most(t.positives_dropped)}; negatives by {most(t.negatives_dropped)}"
            for t in result["stages"] if t.positives_dropped or t.negatives_dropped]


STAGE_HEADER = ["stage", "positives in", "kept", "dropped", "negatives in", "kept", "dropped"]
