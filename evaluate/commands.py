"""`winnow eval scorer|run|dedup|decontam`: the command line of the measurements (tables on the
terminal; `eval scorer --html` also writes a page drawn like the run report)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def print_table(title: str, header: list[str], rows: list) -> None:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        left = i == 0 and bool(rows) and isinstance(rows[0][0], str)
        table.add_column(name, justify="left" if left else "right")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row))
    console.print(table)


def _write_html(path: str | None, text: str) -> None:
    if path:
        Path(path).write_text(text)
        console.print(f"page: {path}")


def _scorer(args: argparse.Namespace) -> int:
    from winnow.evaluate.common import read_labels
    from winnow.evaluate.scorer import evaluate, page, score_texts, target_lines

    if not Path(args.model).exists():  # before reading any data
        raise FileNotFoundError(f"eval scorer: no model or config at {args.model}")
    texts, positive = read_labels(args.data, args.text_field, args.label_field, positive=args.positive)
    console.print(f"scoring {len(texts):,} labelled documents ({int(positive.sum()):,} positive) ...")
    scored = score_texts(args.model, texts, args.stage, args.model_label)
    result = evaluate(scored, positive, args.bootstrap, args.seed, args.target_precision, args.target_recall)
    lo, hi = result["roc_auc_ci"]
    plo, phi = result["pr_auc_ci"]
    console.print(f"{result['scorer']}\nROC AUC {result['roc_auc']:.4f} (95% interval {lo:.4f}-{hi:.4f}), "
                  f"PR AUC {result['pr_auc']:.4f} ({plo:.4f}-{phi:.4f}); positives {result['positives']:,} of "
                  f"{result['documents']:,}", highlight=False)
    print_table("thresholds (selected: score >= threshold)", ["score >=", "selected", "precision", "recall"],
                result["thresholds"])
    print_table("top shares", ["top share", "lowest score in it", "precision", "recall"], result["shares"])
    print_table("calibration by score decile", ["decile", "documents", "lowest", "highest", "mean score",
                                                "positive share"], result["calibration"])
    for line in target_lines(result):
        console.print(line, highlight=False)
    _write_html(args.html, page(result))
    return 0


def _run(args: argparse.Namespace) -> int:
    from winnow.evaluate.common import read_labels
    from winnow.evaluate.run import STAGE_HEADER, evaluate_run, reason_lines, stage_rows
    from winnow.storage.fs import resolve

    ids, positive = read_labels(args.labels, None, args.label_field, id_field=args.id_field, positive=args.positive)
    result = evaluate_run(resolve(args.output), ids, positive, args.samples)
    console.print(f"{result['output']}: {result['found']:,} of {result['labelled']:,} labelled documents found in "
                  f"the run ({result['not_found']:,} not seen by any stage)", highlight=False)
    print_table("labelled documents through the stages", STAGE_HEADER, stage_rows(result))
    for line in reason_lines(result):
        console.print(line, highlight=False)
    f = result["final"]
    console.print(f"output: {f['kept']:,} labelled documents kept ({f['positives_kept']:,} positive): precision "
                  f"{f['precision']:.3f} (positives among those found: {f['base_rate']:.3f}), recall "
                  f"{f['recall']:.3f}", highlight=False)
    for tally in result["stages"]:
        if tally.samples:
            console.print(f"\n{tally.stage} dropped {sum(tally.positives_dropped.values()):,} positives, e.g.:",
                          highlight=False)
            for s in tally.samples:
                console.print(f"  {s.id} ({s.reason}: {s.detail or '-'})\n    {s.snippet}", highlight=False,
                              markup=False)
    console.print(result["read"].describe(), highlight=False)
    return 0


def _dedup(args: argparse.Namespace) -> int:
    from winnow.evaluate.dedup import evaluate_dedup
    from winnow.storage.fs import resolve

    r = evaluate_dedup(resolve(args.output), args.stage, args.sample, args.missed_sample, args.seed)
    p, m = r["precision"], r["missed"]
    console.print(f"{r['output']}: {args.stage} at Jaccard threshold {r['threshold']} "
                  f"(exact Jaccard of the stage's own shingles)", highlight=False)
    lo, hi = p["interval"]
    console.print(f"precision: {p['at_or_above']:,} of {p['checked']:,} sampled removed documents (of "
                  f"{p['removed']:,} removed) reach the threshold with their survivor: {p['precision']:.3f} (95% "
                  f"interval {lo:.3f}-{hi:.3f})" + (f"; {p['earlier_run']} with a survivor from an earlier run not "
                                                    f"checked" if p["earlier_run"] else ""), highlight=False)
    if p["lowest"]:
        console.print("  least similar merged pairs: " + ", ".join(f"{a} ~ {b} {j:.2f}" for a, b, j in p["lowest"]),
                      highlight=False)
    lo, hi = m["interval"]
    slo, shi = m.get("share_interval", (math.nan, math.nan))
    console.print(f"missed: of {m['sampled']:,} sampled kept documents, {m.get('sampled_with_duplicate', 0):,} have "
                  f"a kept document at or above the threshold ({m.get('share_with_duplicate', math.nan):.3f}, "
                  f"95% interval {slo:.3f}-{shi:.3f}); estimated missed pairs among the {m['kept']:,} kept: "
                  f"{m['pairs']:,.0f} (95% interval {lo:,.0f}-{hi:,.0f})", highlight=False)
    for a, b, j in m["examples"]:
        console.print(f"  missed: {a} ~ {b} (Jaccard {j:.2f})", highlight=False)
    print_table("per source", ["source", "in", "removed", "share removed"], r["sources"]["rows"])
    for c in r["sources"]["clusters"]:
        console.print(f"cluster of {c['size']:,} kept as {c['survivor']}:", highlight=False)
        for doc_id, source, text in c["members"]:
            console.print(f"  {doc_id} ({source}) {text}", highlight=False, markup=False)
    console.print(r["read"].describe(), highlight=False)
    return 0


def _decontam(args: argparse.Namespace) -> int:
    from winnow.evaluate.decontam import FORMS, evaluate_decontam, read_corpus, stage_config

    config = stage_config(args.config, args.benchmarks, args.fields, args.n, args.min_matches)
    corpus = read_corpus(args.corpus, args.docs, args.text_field)
    r = evaluate_decontam(config, corpus, args.items, args.k, args.seed)
    console.print(f"{r['items']} benchmark items planted in {r['corpus_documents']:,} corpus documents, "
                  f"{r['n']}-grams, min_matches {r['min_matches']}; {r['short_items']} items have fewer than "
                  f"{r['n'] + r['min_matches'] - 1} words and cannot be found in any form", highlight=False)
    rows = [(form, f["planted"], f["found"], f["recall"], f["eligible"], f["recall_eligible"])
            for form, f in r["forms"].items()]
    print_table(f"recall per form (every_kth: every {r['k']}th word changed)",
                ["form", "planted", "found", "recall", f"items >= {r['n'] + r['min_matches'] - 1} words",
                 "their recall"], rows)
    console.print(f"flag rate on the corpus documents as they are: {r['flagged']:,} of {r['corpus_documents']:,} "
                  f"({r['flag_rate']:.2%})", highlight=False)
    for doc, items in r["flagged_examples"]:
        console.print(f"  corpus document {doc} matches {', '.join(sorted(items))}", highlight=False)
    for form in FORMS:
        missed = r["forms"][form]["missed"]
        if missed:
            console.print(f"{form}: missed {len(missed)} long enough items, e.g. "
                          + ", ".join(f"{p.item} ({p.words} words)" for p in missed[:5]), highlight=False)
    return 0


def add_eval_parser(sub) -> None:
    """The `eval` command and its four subcommands."""
    ev = sub.add_parser("eval", help="measure what curation does on your own data: a scorer, a run, dedup, "
                                     "decontamination").add_subparsers(dest="what", required=True)

    p = ev.add_parser("scorer", help="a quality/toxicity scorer against labelled documents: ROC/PR AUC with "
                                     "intervals, thresholds, top shares, calibration")
    p.add_argument("model", help="a fastText model (.bin/.ftz), a Hugging Face model directory, or a YAML config "
                                 "holding a quality or toxicity stage (scored exactly as a run would)")
    p.add_argument("--data", required=True, help="labelled documents (.jsonl/.json/.parquet/.csv, optionally .gz)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default="label")
    p.add_argument("--positive", help="the label value of the class the score should find (default: 1/true)")
    p.add_argument("--stage", help="with a run config holding several scored stages: which one")
    p.add_argument("--model-label", help="with a model: the label whose probability is the score (default: its "
                                         "model card's positive label)")
    p.add_argument("--target-precision", type=float, help="report the threshold that reaches this precision")
    p.add_argument("--target-recall", type=float, help="report the threshold that reaches this recall")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--html", help="also write the page with the curves and histograms here")
    p.set_defaults(func=_scorer)

    p = ev.add_parser("run", help="how each stage of a finished run treated labelled documents (nothing re-run)")
    p.add_argument("output", help="the run's output directory or s3:// URI")
    p.add_argument("--labels", required=True, help="labels by document id (.jsonl/.json/.parquet/.csv)")
    p.add_argument("--id-field", default="id")
    p.add_argument("--label-field", default="label")
    p.add_argument("--positive", help="the label value of the documents you want kept (default: 1/true)")
    p.add_argument("--samples", type=int, default=3, help="positives shown per stage that dropped the most")
    p.set_defaults(func=_run)

    p = ev.add_parser("dedup", help="a finished run's dedup by exact Jaccard: precision of what it merged, pairs "
                                    "it missed, removal per source")
    p.add_argument("output", help="the run's output directory or s3:// URI")
    p.add_argument("--stage", default="dedup", help="the MinHash dedup stage (default: dedup)")
    p.add_argument("--sample", type=int, default=200, help="removed documents checked against their survivor")
    p.add_argument("--missed-sample", type=int, default=100,
                   help="kept documents compared with every kept document (one pass over the kept text)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_dedup)

    p = ev.add_parser("decontam", help="plant benchmark items in corpus documents in the forms a crawl produces; "
                                       "recall per form and the flag rate of decontaminate")
    p.add_argument("--benchmarks", nargs="+", default=[], help="benchmark files (llm-foundry JSONL, .txt, or any "
                                                               "JSONL/Parquet with --fields)")
    p.add_argument("--fields", nargs="+", help="fields whose text is an item (e.g. question answer)")
    p.add_argument("--config", help="a run config: use its decontaminate stage (benchmarks, n, min_matches)")
    p.add_argument("--corpus", required=True, help="corpus file or directory (.jsonl[.gz|.zst], .parquet; "
                                                   "local or s3://)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--docs", type=int, default=1000, help="corpus documents read (hosts and the flag rate)")
    p.add_argument("--items", type=int, default=200, help="benchmark items sampled and planted in every form")
    p.add_argument("--n", type=int, help="words per n-gram (default: the stage's, 13)")
    p.add_argument("--min-matches", type=int, help="matching n-grams that flag a document (default: the stage's, 1)")
    p.add_argument("--k", type=int, default=8, help="every_kth: replace every k-th word (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_decontam)
