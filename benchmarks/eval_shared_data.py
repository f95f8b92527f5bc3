"""The README's "Measuring a pipeline" figures: each `winnow eval` command on the shared data.

- scorer: a fastText toxicity classifier trained by `winnow train toxicity` on the Davidson tweets,
  measured on another source, Civil Comments posts labelled by their annotators' majority (toxic unless
  most flagged "not toxic");
- run: a run over 1,000 C4 pages, 200 edited copies of them (2% to 30% of their words replaced) and 400
  reference passages (BoolQ's Wikipedia passages, Project Gutenberg paragraphs) labelled as the
  documents to keep, through heuristics, exact and fuzzy dedup;
- dedup: that run's dedup stage (the edited copies are its near-duplicates);
- decontam: BoolQ, ARC-Easy, PIQA and GSM8K items planted into those C4 pages.

    python benchmarks/eval_shared_data.py [--work /tmp/winnow-eval]

Needs ../shared/data beside the repository (or --data).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from support import edited

ROOT = Path(__file__).resolve().parents[1]


def winnow(*args: str) -> None:
    print(f"\n$ winnow {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "winnow.flows.cli", *args], check=True)


def civil_comments(data: Path, out: Path) -> Path:
    """Civil Comments posts with a toxic/clean label by the annotators' majority."""
    folder = data / "toxicity" / "toxic_spans_civil_comments"
    not_toxic, votes = Counter(), Counter()
    with open(folder / "data__annotations.csv", newline="") as f:
        for row in csv.DictReader(f):
            votes[row["comment_id"]] += 1
            not_toxic[row["comment_id"]] += row["not toxic"] in ("1", "True", "true")
    rows = []
    with open(folder / "data__comments.csv", newline="") as f:
        for row in csv.DictReader(f):
            n = votes[row["comment_id"]]
            if n:
                rows.append({"text": row["comment_text"], "label": "clean" if not_toxic[row["comment_id"]] * 2 > n
                             else "toxic"})
    with open(out, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return out


def reference_passages(data: Path, n: int, rng: random.Random) -> list[str]:
    boolq = [json.loads(line)["query"].removeprefix("Passage: ").split("\nQuestion:")[0]
             for line in open(data / "reference" / "llmfoundry_eval_local_data" / "boolq.jsonl")]
    books = []
    with gzip.open(data / "reference" / "gutenberg_test_corpus" / "gutenberg_books.jsonl.gz", "rt") as f:
        for line in f:
            paragraphs = [p.strip() for p in json.loads(line)["text"].split("\n\n") if len(p.strip()) > 400]
            books += paragraphs[10:110]
    books = rng.sample(books, min(len(books), n // 2))
    return rng.sample(sorted(set(boolq)), n - len(books)) + books


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/winnow-eval")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    work, data = Path(args.work), Path(args.data)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)

    # scorer: trained on one source of tweets, measured on another of comments
    if not (work / "toxicity.bin").exists():
        winnow("train", "toxicity", "--data", str(data / "toxicity" / "davidson_hate_offensive" / "labeled_data.csv"),
               "--text-field", "tweet", "--label-field", "class", "--label-map", "0=toxic,1=toxic,2=clean",
               "--positive", "toxic", "--out", str(work / "toxicity.bin"))
    winnow("eval", "scorer", str(work / "toxicity.bin"), "--data", str(civil_comments(data, work / "civil.jsonl")),
           "--positive", "toxic", "--target-precision", "0.9", "--html", str(work / "scorer.html"))

    # a run over web pages and reference passages, the passages labelled as what should be kept
    c4 = [json.loads(line) for line in open(data / "web" / "c4_train_first1k" / "c4_sample.jsonl")]
    passages = reference_passages(data, 400, rng)
    rows = [{"id": f"c4-{i:04d}", "text": d["text"]} for i, d in enumerate(c4)]
    rows += [{"id": f"ref-{i:04d}", "text": t} for i, t in enumerate(passages)]
    long_pages = [d["text"] for d in c4 if len(d["text"].split()) >= 100]
    for i in range(200):  # near copies, as a crawl has them: 2% to 30% of the words replaced
        share = [0.02, 0.05, 0.1, 0.2, 0.3][i % 5]
        rows.append({"id": f"copy-{i:04d}", "text": edited(long_pages[i], rng, share)})
    rng.shuffle(rows)
    (work / "input").mkdir(exist_ok=True)
    for k in range(4):
        with open(work / "input" / f"part-{k}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[k::4])
    with open(work / "labels.jsonl", "w") as f:
        f.writelines(json.dumps({"id": r["id"], "keep": int(r["id"].startswith("ref"))}) + "\n" for r in rows)
    config = {"input": {"uri": str(work / "input"), "id_field": "id"}, "output": str(work / "out"),
              "runtime": {"progress": False},
              "stages": [{"name": "ingest"}, {"name": "heuristics"}, {"name": "exact_dedup"}, {"name": "dedup"}]}
    (work / "run.yaml").write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "winnow.flows.cli", "run", str(work / "run.yaml"), "--restart"], check=True,
                   stdout=subprocess.DEVNULL)
    winnow("eval", "run", str(work / "out"), "--labels", str(work / "labels.jsonl"), "--label-field", "keep")
    winnow("eval", "dedup", str(work / "out"))

    # decontamination: benchmark items planted into the C4 pages
    bench = data / "reference" / "llmfoundry_eval_local_data"
    with open(work / "gsm8k.jsonl", "w") as f:
        f.writelines(line for line in open(data / "reference" / "gsm8k" / "test.jsonl"))
    config = {"input": {"uri": "unused"}, "output": "unused", "stages": [{"name": "ingest"}, {
        "name": "decontaminate", "benchmarks": [
        {"path": str(bench / "boolq.jsonl")}, {"path": str(bench / "arc_easy.jsonl")},
        {"path": str(bench / "piqa.jsonl")}, {"path": str(work / "gsm8k.jsonl"), "fields": ["question", "answer"]}]}]}
    (work / "decontam.yaml").write_text(yaml.safe_dump(config))
    for n in ("13", "8"):
        winnow("eval", "decontam", "--config", str(work / "decontam.yaml"), "--corpus",
               str(data / "web" / "c4_train_first1k"), "--items", "200", "--n", n)


if __name__ == "__main__":
    main()
