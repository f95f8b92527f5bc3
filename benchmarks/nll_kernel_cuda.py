"""The Triton NLL kernel against the chunked fp32 reference on CUDA, at real vocabulary sizes.

For each vocabulary (GPT-2's 50,257, Llama 3's 128,256, Qwen 2's 151,936), dtype (fp32, bf16) and a
set of ragged token counts (not multiples of the kernel's tiles), with and without bias, scale and
softcap: the largest absolute and relative difference from `chunked_nll` on the same inputs, the
kernel's time and the reference's. Exits non-zero if any case is outside tolerance. CI checks the
kernel in Triton's CPU interpreter at small sizes (tests/test_lm_scoring.py); this is the check on
the hardware. Needs only torch and triton.

    python benchmarks/nll_kernel_cuda.py [--dim 768]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import torch

VOCABS = (50_257, 128_256, 151_936)
TOKENS = (1, 77, 1000, 4093)
TOLERANCE = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (2e-3, 1e-2)}  # (relative, absolute) in nats


def timed(fn) -> tuple[torch.Tensor, float]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check runs on a GPU (CI runs the kernel in Triton's interpreter)")
    from winnow.gpu.fused_ce import chunked_nll, triton_nll

    torch.manual_seed(0)
    failures = 0
    print(f"{torch.cuda.get_device_name()}, hidden size {args.dim}")
    print(f"{'vocab':>8} {'dtype':>9} {'tokens':>6} {'head':>18} {'max abs':>9} {'max rel':>9} {'kernel ms':>9} "
          f"{'ref ms':>8}")
    for vocab in VOCABS:
        for dtype in (torch.float32, torch.bfloat16):
            weight = (torch.randn(vocab, args.dim, device="cuda") * args.dim ** -0.5).to(dtype)
            bias = torch.randn(vocab, device="cuda").to(dtype)
            for n in TOKENS:
                hidden = torch.randn(n, args.dim, device="cuda").to(dtype)
                targets = torch.randint(0, vocab, (n,), device="cuda")
                for head in ({}, {"bias": bias, "scale": 0.5, "softcap": 30.0}):
                    triton_nll(hidden, weight, targets, **head)  # compile outside the timing
                    got, kernel_s = timed(functools.partial(triton_nll, hidden, weight, targets, **head))
                    want, ref_s = timed(functools.partial(chunked_nll, hidden, weight, targets, **head))
                    diff = (got - want).abs()
                    rel, abs_ = TOLERANCE[dtype]
                    ok = bool((diff <= abs_ + rel * want.abs()).all())
                    failures += not ok
                    label = "bias+scale+softcap" if head else "plain"
                    print(f"{vocab:>8,} {str(dtype).split('.')[1]:>9} {n:>6} {label:>18} {diff.max().item():>9.2e} "
                          f"{(diff / want.abs().clamp_min(1e-6)).max().item():>9.2e} {kernel_s * 1e3:>9.2f} "
                          f"{ref_s * 1e3:>8.2f}{'' if ok else '  OUTSIDE TOLERANCE'}")
    print("all cases within tolerance" if not failures else f"{failures} case(s) outside tolerance")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
