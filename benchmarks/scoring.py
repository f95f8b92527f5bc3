"""Scoring throughput.

(a) fastText: winnow's quality stage on record batches vs a bare `model.predict` loop over the
    same texts (newlines folded, as fastText needs) -- winnow's overhead in percent.
(b) transformer: winnow's engine (length-sorted, token-budget batches, padding to a multiple
    of 8) vs a naive fixed-size batch padded to its longest document, same tiny model, same
    documents -- real tokens/s of each and the ratio. On a GPU (when present) both run there.

    .venv/bin/python benchmarks/scoring.py [--docs 20000] [--transformer-docs 2000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def web_and_reference() -> tuple[list[str], list[str]]:
    web = [json.loads(line)["text"] for line in open(SHARED / "web/c4_train_first1k/c4_sample.jsonl")]
    with gzip.open(SHARED / "web/olmo_c4_sample_1k/c4-sample.00000-of-00001.json.gz", "rt") as f:
        web += [json.loads(line)["text"] for line in f]
    ref = [json.loads(line)["query"].removeprefix("Passage: ").split("\nQuestion:")[0]
           for line in open(SHARED / "reference/llmfoundry_eval_local_data/boolq.jsonl")]
    return web, ref


def bench_fasttext(web: list[str], ref: list[str], n_docs: int, work: Path) -> None:
    from winnow.stages.quality import QualityConfig
    from winnow.schemas.documents import DOCUMENT_SCHEMA
    from winnow.scorers.fasttext import load_model, train
    from winnow.stages.quality import Quality

    model_path = work / "quality.bin"
    train(ref + web, ["hq"] * len(ref) + ["cc"] * len(web), model_path, positive="hq", holdout=0.0)
    texts = [web[i % len(web)] for i in range(n_docs)]
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


def bench_transformer(web: list[str], n_docs: int, work: Path) -> None:
    from winnow.scorers.transformer import TransformerScorer, make_tiny_classifier

    path = make_tiny_classifier(work / "tiny", web[:500], num_labels=2, hidden=128, layers=4)
    texts = [web[i % len(web)] for i in range(n_docs)]
    scorer = TransformerScorer(path, max_length=512)
    device = scorer.device
    ids = scorer.encode(texts)
    real_tokens = sum(map(len, ids))
    scorer.predict_all(texts[:64])  # warm up
    start = time.perf_counter()
    scorer.predict_all(texts)
    ours = time.perf_counter() - start

    naive_batch = 32
    for padding in ("longest", "max_length"):  # padded to each batch's longest, or to the model's limit
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n_docs, naive_batch):
                enc = scorer.tokenizer(texts[i:i + naive_batch], truncation=True, max_length=512, padding=padding,
                                       return_tensors="pt").to(device)
                torch.softmax(scorer.model(**enc).logits.float(), dim=-1).cpu().numpy()
        naive = time.perf_counter() - start
        print(f"(b) transformer (BERT {sum(p.numel() for p in scorer.model.parameters()) / 1e6:.1f}M params, max "
              f"512 tokens) on {n_docs:,} C4 documents, {device}: naive batches of {naive_batch} padded to "
              f"{padding} {real_tokens / naive:,.0f} tokens/s, winnow engine {real_tokens / ours:,.0f} tokens/s "
              f"-> {naive / ours:.2f}x")
    print(f"    engine padding: {scorer.engine.padded_tokens / scorer.engine.real_tokens - 1:.1%} extra tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--transformer-docs", type=int, default=2_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    web, ref = web_and_reference()
    with tempfile.TemporaryDirectory() as tmp:
        bench_fasttext(web, ref, args.docs, Path(tmp))
        bench_transformer(web, args.transformer_docs, Path(tmp))


if __name__ == "__main__":
    main()
