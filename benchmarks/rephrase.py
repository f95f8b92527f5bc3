"""Rephrasing throughput: batched generation vs one request at a time, same model, same backend.

The model is a randomly initialised GPT-2 (winnow's BPE, --hidden/--layers) since no weights can
be downloaded here; it generates exactly --new-tokens tokens per prompt (EOS suppressed), so both
runs do the same work. Both runs go through the `rephrase` stage's own code path (`Rephrase.apply`
with the transformers backend); only `batch_size` differs. Printed: documents/s, prompts/s and
generated tokens/s for each, and the ratio. On a GPU add --device cuda; with vLLM installed,
--vllm MODEL_DIR adds the vLLM backend's tokens/s on the same documents.

    .venv/bin/python benchmarks/rephrase.py [--docs 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run(stage, table: pa.Table) -> tuple[float, int, int]:
    jobs = stage.plan(table)
    start = time.perf_counter()
    result = stage.apply(table, jobs)
    seconds = time.perf_counter() - start
    assert result.rejects.num_rows == 0, result.rejects.column("reject_detail").to_pylist()[:3]
    return seconds, sum(len(chunks) for _, _, chunks in jobs), result.rows_added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vllm", help="a HF model directory to time with the vllm backend as well")
    args = parser.parse_args()

    import torch

    from winnow.stages.rephrase import RephraseConfig
    from winnow.schemas.documents import DOCUMENT_SCHEMA
    from winnow.scorers.lm import make_tiny_lm
    from winnow.scorers.tokenizer import train_bpe
    from winnow.stages.rephrase import Rephrase

    torch.set_num_threads(1)
    texts = [json.loads(line)["text"][:1200] for line in open(SHARED / "web/c4_train_first1k/c4_sample.jsonl")]
    docs = texts[: args.docs]
    n = len(docs)
    table = pa.table({"id": [f"d{i}" for i in range(n)], "text": docs, "source": ["c4"] * n, "url": [None] * n,
                      "meta": [None] * n}, schema=DOCUMENT_SCHEMA)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_bpe(texts, 8000, Path(tmp) / "bpe")
        model = make_tiny_lm(Path(tmp) / "lm", tokenizer, context=1024, hidden=args.hidden, layers=args.layers)
        config = json.loads((model / "generation_config.json").read_text()) if (
            model / "generation_config.json").exists() else {}
        config["suppress_tokens"] = [config.get("eos_token_id", 0)]  # full-length outputs: equal work per prompt
        (model / "generation_config.json").write_text(json.dumps(config))
        base = dict(name="rephrase", backend="transformers", model=str(model), styles=["wiki"], mix=1.0,
                    max_new_tokens=args.new_tokens, temperature=0.8, device=args.device, max_output_ratio=100)
        results = {}
        for label, batch in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
            stage = Rephrase(RephraseConfig(**base, batch_size=batch))
            results[label] = run(stage, table)
        if args.vllm:
            results["vllm"] = run(Rephrase(RephraseConfig(**{**base, "backend": "vllm", "model": args.vllm})), table)
    for label, (seconds, prompts, rows) in results.items():
        print(f"{label:<16} {rows} documents, {prompts} prompts in {seconds:.1f} s: {rows / seconds:.2f} docs/s, "
              f"{prompts * args.new_tokens / seconds:,.0f} generated tokens/s")
    single, batched = list(results.values())[:2]
    print(f"batched / one at a time: {single[0] / batched[0]:.1f}x documents/s "
          f"(model hidden {args.hidden}, {args.layers} layers, {args.new_tokens} new tokens, {args.device})")


if __name__ == "__main__":
    main()
