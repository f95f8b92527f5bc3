r"""Rephrasing throughput: batched generation vs one request at a time, same model, same backend.

The model is a randomly initialised GPT-2 (winnow's BPE, --hidden/--layers/--heads) since no weights
can be downloaded here; it generates exactly --new-tokens tokens per prompt (EOS suppressed), so
both runs do the same work. Both run the `rephrase` stage's generation backend (transformers: left
padding, batches sorted by prompt length, bf16 on CUDA) on the stage's default wiki-style prompt around
each document's first 1,200 characters; only `batch_size` differs. Printed: documents/s and
generated tokens/s for each, and the ratio. With vLLM installed, --vllm MODEL_DIR adds the vLLM
backend's tokens/s on the same prompts. Needs only torch, transformers and numpy.

    .venv/bin/python benchmarks/rephrase.py [--docs 64] [--batch-size 32]
    python benchmarks/rephrase.py --device cuda --hidden 2048 --layers 16 --heads 16 --vocab 32000 \
        --docs 512 --batch-size 128 --new-tokens 256     # a ~1B-parameter GPT-2 shape
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texts import c4_texts, distinct_texts  # noqa: E402 - the benchmarks' text, real or generated


def run(backend, prompts: list[str], params) -> tuple[float, int]:
    import torch

    start = time.perf_counter()
    generations = backend.generate(prompts, params)
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert all(g.error is None for g in generations), [g.detail for g in generations if g.error][:3]
    return seconds, len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, help="LM head width (default: the tokenizer's 8,000)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--vllm", help="a HF model directory to time with the vllm backend as well")
    args = parser.parse_args()

    import torch

    from winnow.scorers.generate import (
        WRAP_INSTRUCTIONS,
        WRAP_SYSTEM,
        WRAP_TEMPLATE,
        SamplingParams,
        TransformersBackend,
        VLLMBackend,
    )
    from winnow.scorers.lm import make_tiny_lm
    from winnow.scorers.tokenizer import train_bpe

    if args.device == "cpu":
        torch.set_num_threads(1)
    web = c4_texts()
    wiki = WRAP_TEMPLATE.replace("{system}", WRAP_SYSTEM).replace("{instruction}", WRAP_INSTRUCTIONS["wiki"])
    prompts = [wiki.replace("{text}", text[:1200]) for text in distinct_texts(args.docs)]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.8, top_p=0.95, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_bpe(web, 8000, Path(tmp) / "bpe")
        model = make_tiny_lm(Path(tmp) / "lm", tokenizer, context=2048, hidden=args.hidden, layers=args.layers,
                             heads=args.heads, vocab_size=args.vocab)
        config = json.loads((model / "generation_config.json").read_text()) if (
            model / "generation_config.json").exists() else {}
        config["suppress_tokens"] = [config.get("eos_token_id", 0)]  # full-length outputs: equal work per prompt
        (model / "generation_config.json").write_text(json.dumps(config))
        results = {}
        for label, batch in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
            backend = TransformersBackend(str(model), args.device, batch)
            backend.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm up
            results[label] = run(backend, prompts, params)
            params_m = sum(p.numel() for p in backend.model.parameters()) / 1e6
            del backend
        if args.vllm:
            results["vllm"] = run(VLLMBackend(args.vllm), prompts, params)
    for label, (seconds, n) in results.items():
        print(f"{label:<16} {n} prompts in {seconds:.1f} s: {n / seconds:.2f} docs/s, "
              f"{n * args.new_tokens / seconds:,.0f} generated tokens/s")
    single, batched = list(results.values())[:2]
    gpu = f" {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"batched / one at a time: {single[0] / batched[0]:.1f}x documents/s ({params_m:,.0f}M parameters: "
          f"hidden {args.hidden}, {args.layers} layers, {args.new_tokens} new tokens, {args.device}{gpu})")


if __name__ == "__main__":
    main()
