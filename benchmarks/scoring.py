"""Scoring throughput.

(a) fastText: winnow's quality stage on record batches vs a bare `model.predict` loop over the
    same texts (newlines folded, as fastText needs) -- winnow's overhead in percent.
(b) transformer: winnow's engine (length-sorted, token-budget batches, padding to a multiple
    of 8) vs naive fixed-size batches padded to their longest document (and to 512), same model,
    same documents, both under bf16 autocast on CUDA -- real tokens/s of each, the ratio, and on
    CUDA the peak GPU memory. The model is a randomly initialised BERT of the given shape (speed does
    not depend on the weights); `--bert-base` is BERT-base (768 hidden, 12 layers, 110M parameters).

    .venv/bin/python benchmarks/scoring.py [--docs 20000] [--transformer-docs 2000]
    python benchmarks/scoring.py --device cuda --bert-base --skip-fasttext --transformer-docs 20000

(b) needs only torch, transformers and numpy (the GPU machine has no fastText or Ray).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texts import SHARED, c4_texts, distinct_texts  # noqa: E402 - the benchmarks' text, real or generated


def reference_texts() -> list[str]:
    return [json.loads(line)["query"].removeprefix("Passage: ").split("\nQuestion:")[0]
            for line in open(SHARED / "reference/llmfoundry_eval_local_data/boolq.jsonl")]


def bench_fasttext(web: list[str], ref: list[str], n_docs: int, work: Path) -> None:
    from winnow.schemas.documents import DOCUMENT_SCHEMA
    from winnow.scorers.fasttext import load_model, train
    from winnow.stages.quality import Quality, QualityConfig

    model_path = work / "quality.bin"
    train(ref + web, ["hq"] * len(ref) + ["cc"] * len(web), model_path, positive="hq", holdout=0.0)
    texts = distinct_texts(n_docs)
    batch = 2048
    tables = [pa.table({"id": [str(j) for j in range(i, i + len(texts[i:i + batch]))], "text": texts[i:i + batch],
                        "source": ["b"] * len(texts[i:i + batch]), "url": [None] * len(texts[i:i + batch]),
                        "meta": [None] * len(texts[i:i + batch])}, schema=DOCUMENT_SCHEMA)
              for i in range(0, n_docs, batch)]
    stage = Quality(QualityConfig(name="quality", scorer={"model": str(model_path)}, threshold=0.5))
    model = load_model(str(model_path))
    stage.apply(tables[0])  # load once, as a worker does
    timings = {"bare": [], "winnow": []}
    for _ in range(3):  # interleaved repeats, best of three each
        start = time.perf_counter()
        for i in range(0, n_docs, batch):
            model.predict([t.replace("\n", " ") for t in texts[i:i + batch]], k=-1)
        timings["bare"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for table in tables:
            stage.apply(table)
        timings["winnow"].append(time.perf_counter() - start)
    bare, ours = min(timings["bare"]), min(timings["winnow"])
    print(f"(a) fastText on {n_docs:,} C4 documents, one core: bare predict loop {n_docs / bare:,.0f} docs/s, "
          f"winnow quality stage {n_docs / ours:,.0f} docs/s -> overhead {100 * (ours / bare - 1):.1f}%")


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mib(device) -> str:
    if device.type != "cuda":
        return ""
    peak = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    return f", peak GPU memory {peak:,.0f} MiB"


def bench_transformer(web: list[str], n_docs: int, work: Path, args) -> None:
    from contextlib import nullcontext

    from support import make_tiny_classifier
    from winnow.scorers.transformer import TransformerScorer

    path = make_tiny_classifier(work / "model", web[:500], num_labels=2, hidden=args.hidden, layers=args.layers,
                                heads=args.heads, intermediate=args.intermediate, vocab_size=args.vocab)
    texts = distinct_texts(n_docs)
    scorer = TransformerScorer(path, max_length=512, device=args.device, max_batch_tokens=args.max_batch_tokens)
    device = scorer.device
    params = sum(p.numel() for p in scorer.model.parameters()) / 1e6
    real_tokens = sum(map(len, scorer.encode(texts)))
    scorer.predict_all(texts[:256])  # warm up (CUDA kernels, allocator)
    synchronize(device)
    peak_mib(device)
    start = time.perf_counter()
    scorer.predict_all(texts)
    synchronize(device)
    ours = time.perf_counter() - start
    ours_memory = peak_mib(device)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    naive_batch = args.naive_batch
    print(f"(b) transformer: BERT {params:.1f}M parameters ({args.hidden} hidden, {args.layers} layers), max 512 "
          f"tokens, {n_docs:,} documents ({real_tokens:,} tokens), {device}"
          f"{' ' + torch.cuda.get_device_name() if device.type == 'cuda' else ''}")
    print(f"    winnow engine: {real_tokens / ours:,.0f} tokens/s{ours_memory}")
    for padding in ("longest", "max_length"):  # padded to each batch's longest, or to the model's limit
        start = time.perf_counter()
        with torch.inference_mode(), autocast:
            for i in range(0, n_docs, naive_batch):
                enc = scorer.tokenizer(texts[i:i + naive_batch], truncation=True, max_length=512, padding=padding,
                                       return_tensors="pt").to(device)
                torch.softmax(scorer.model(**enc).logits.float(), dim=-1).cpu().numpy()
        synchronize(device)
        naive = time.perf_counter() - start
        print(f"    naive batches of {naive_batch} padded to {padding}: {real_tokens / naive:,.0f} tokens/s"
              f"{peak_mib(device)} -> winnow {naive / ours:.2f}x")
    print(f"    engine padding: {scorer.engine.padded_tokens / scorer.engine.real_tokens - 1:.1%} extra tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--transformer-docs", type=int, default=2_000)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--skip-fasttext", action="store_true", help="only (b) (no fastText on the machine)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, help="default 4x hidden")
    parser.add_argument("--vocab", type=int, default=2000, help="WordPiece vocabulary trained on the documents")
    parser.add_argument("--bert-base", action="store_true", help="768 hidden, 12 layers, 12 heads, vocab 30,522")
    parser.add_argument("--max-batch-tokens", type=int, help="the engine's token budget (default: its own)")
    parser.add_argument("--naive-batch", type=int, default=32)
    args = parser.parse_args()
    if args.bert_base:
        args.hidden, args.layers, args.heads, args.vocab = 768, 12, 12, 30522
    args.intermediate = args.intermediate or 4 * args.hidden
    if args.device != "cuda":
        torch.set_num_threads(1)
    web = c4_texts()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_fasttext:
            bench_fasttext(web, reference_texts(), args.docs, Path(tmp))
        bench_transformer(web, args.transformer_docs, Path(tmp), args)


if __name__ == "__main__":
    main()
