r"""Causal-LM scoring: winnow's scorer vs a naive padded Hugging Face forward.

Same model (a small GPT-2 with a --vocab-wide LM head), same documents (shared C4 text). The naive
path pads fixed batches to their longest document and computes full-vocabulary logits and
`cross_entropy`; winnow sorts windows by length under a token budget and computes per-token NLL
from hidden states with the chunked/fused LM-head cross-entropy. Each method runs in a fresh
process; printed: tokens/s and the peak memory above the loaded model (VmHWM minus the resident
size after loading; on CUDA the peak allocated GPU memory minus the model's), i.e. the activation
memory. Both run under bf16 autocast on CUDA. Needs only torch, transformers and numpy.

    .venv/bin/python benchmarks/lm_scoring.py [--docs 400] [--vocab 50257]
    python benchmarks/lm_scoring.py --device cuda --vocab 128256 --hidden 768 --layers 12 --heads 12 \
        --context 1024 --docs 2000     # a ~125M-parameter GPT-2 shape with a 128k LM head
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texts import distinct_texts  # noqa: E402 - the benchmarks' text, real or generated

RUN = r"""
import json, sys, time, torch
from contextlib import nullcontext
from winnow.scorers.lm import LMScorer
def rss(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
model_dir, docs_file, method, device = sys.argv[1:5]
cuda = device == "cuda"
if not cuda:
    torch.set_num_threads(1)
texts = json.load(open(docs_file))
scorer = LMScorer(model_dir, device=device)
def naive(texts):
    tok, model, tokens = scorer.tokenizer, scorer.model, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    with torch.inference_mode(), autocast:
        for i in range(0, len(texts), 8):
            enc = tok(texts[i:i + 8], add_special_tokens=False)["input_ids"]
            ids = [[scorer.start_id] + x[: scorer.context - 1] for x in enc]
            width = max(map(len, ids))
            batch = torch.tensor([x + [0] * (width - len(x)) for x in ids], device=device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
            logits = model(input_ids=batch, attention_mask=mask).logits.float()
            labels = batch[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                    ignore_index=-100, reduction="none").cpu()
            tokens += int((labels != -100).sum())
    return tokens
run = (lambda t: int(scorer.score(t)["n_tokens"].sum())) if method == "winnow" else naive
if cuda:
    run(texts[:16])  # warm up kernels and the allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20
else:
    base = rss("VmRSS:")
start = time.perf_counter()
tokens = run(texts)
if cuda:
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss("VmHWM:")
params = sum(p.numel() for p in scorer.model.parameters()) / 1e6
print(json.dumps({"tokens": tokens, "seconds": seconds, "activation_mib": peak - base, "params_m": params,
                  "gpu": torch.cuda.get_device_name() if cuda else None}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args()

    from winnow.scorers.lm import make_tiny_lm
    from winnow.scorers.tokenizer import train_bpe

    texts = distinct_texts(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_bpe(texts, 8000, Path(tmp) / "bpe")
        model = make_tiny_lm(Path(tmp) / "lm", tok, context=args.context, hidden=args.hidden, layers=args.layers,
                             heads=args.heads, vocab_size=args.vocab)
        docs_file = Path(tmp) / "docs.json"
        docs_file.write_text(json.dumps(texts))
        results = {}
        for method in ("naive", "winnow"):
            out = subprocess.run([sys.executable, "-c", RUN, str(model), str(docs_file), method, args.device],
                                 capture_output=True, text=True, check=True)
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    for method, r in results.items():
        print(f"{method:<7} {r['tokens']:,} tokens in {r['seconds']:.1f} s: "
              f"{r['tokens'] / r['seconds']:,.0f} tokens/s, "
              f"peak activation memory {r['activation_mib']:,.0f} MiB")
    naive, ours = results["naive"], results["winnow"]
    print(f"{ours['params_m']:.0f}M parameters, vocab {args.vocab:,}, context {args.context}, "
          f"{ours['gpu'] or args.device}: "
          f"{(ours['tokens'] / ours['seconds']) / (naive['tokens'] / naive['seconds']):.2f}x tokens/s, "
          f"{naive['activation_mib'] / max(ours['activation_mib'], 1):.1f}x lower peak activation memory")


if __name__ == "__main__":
    main()
