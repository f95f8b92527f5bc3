"""Per-token negative log-likelihood from hidden states and the LM head, without materialising the
(tokens x vocab) logits in fp32.

The head is `logits = softcap(scale * (hidden @ weight.T + bias))`, `softcap(x) = c * tanh(x / c)`:
with the bias, scale and cap left out it is a plain linear head (Llama, GPT-2); the parts cover an
output bias (GPT-J, Phi), logit scaling (Granite divides by `logits_scaling`, Cohere multiplies by
`logit_scale`) and final-logit soft-capping (Gemma 2 and 3).

`token_nll(hidden, weight, targets, ...)` picks the path: a Triton kernel on CUDA (one program per
block of tokens streams over vocabulary tiles, keeping an online max and sum of exponentials, so
logits live only in registers/SRAM), and on CPU the chunked PyTorch reference, which computes the
logits of `chunk` tokens at a time (peak extra memory chunk x vocab instead of tokens x vocab).
"""

from __future__ import annotations

import torch

try:  # Triton is optional: present on GPU machines (and usable on CPU via TRITON_INTERPRET=1)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None


def head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, scale: float = 1.0,
                softcap: float | None = None) -> torch.Tensor:
    """fp32 logits of the head described above (the reference every path is checked against)."""
    logits = (hidden @ weight.T).float()
    if bias is not None:
        logits += bias.float()
    if scale != 1.0:
        logits *= scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap).mul_(softcap)
    return logits


def chunked_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 64,
                bias: torch.Tensor | None = None, scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """Reference path: fp32 NLL per token, `chunk` tokens' logits at a time. hidden [N, d], weight [V, d].

    The log-sum-exp runs in place on each chunk's logits: with 64 tokens x 50k vocabulary the chunk
    stays in cache, which makes the pass over the logits nearly free next to the matmul (measured
    on one CPU thread: 0.87 s vs 1.64 s for 256-token chunks with `torch.logsumexp`, matmul alone 0.71 s).
    """
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        logits = head_logits(hidden[start:start + chunk], weight, bias, scale, softcap)
        target = logits.gather(1, targets[start:start + chunk, None].long())[:, 0]
        peak = logits.amax(dim=1)
        lse = logits.sub_(peak[:, None]).exp_().sum(dim=1).log_().add_(peak)
        out[start:start + chunk] = lse - target
    return out


if triton is not None:

    @triton.jit
    def _nll_kernel(h_ptr, w_ptr, b_ptr, t_ptr, out_ptr, n_tokens, vocab, dim, stride_h, stride_w, scale, softcap,
                    HAS_BIAS: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_tokens
        targets = tl.load(t_ptr + rows, mask=row_ok, other=0)
        running_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        running_sum = tl.zeros((BLOCK_M,), tl.float32)
        target_logit = tl.zeros((BLOCK_M,), tl.float32)
        for v0 in range(0, vocab, BLOCK_N):
            cols = v0 + tl.arange(0, BLOCK_N)
            col_ok = cols < vocab
            acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            for k0 in range(0, dim, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_ok = ks < dim
                h = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                            other=0.0)
                w = tl.load(w_ptr + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & k_ok[None, :],
                            other=0.0)
                acc += tl.dot(h, tl.trans(w), input_precision="ieee")
            if HAS_BIAS:
                acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            acc = acc * scale
            if HAS_SOFTCAP:  # c * tanh(x / c), tanh written with exp (2 / (1 + e^-2y) - 1)
                acc = softcap * (2.0 / (1.0 + tl.exp(-2.0 * acc / softcap)) - 1.0)
            acc = tl.where(col_ok[None, :], acc, float("-inf"))
            tile_max = tl.max(acc, axis=1)
            new_max = tl.maximum(running_max, tile_max)
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(acc - new_max[:, None]), axis=1)
            running_max = new_max
            hit = cols[None, :] == targets[:, None]
            target_logit += tl.sum(tl.where(hit, acc, 0.0), axis=1)
        nll = running_max + tl.log(running_sum) - target_logit
        tl.store(out_ptr + rows, nll, mask=row_ok)


def triton_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None,
               scale: float = 1.0, softcap: float | None = None,
               block_m: int = 32, block_n: int = 64, block_k: int = 32) -> torch.Tensor:
    """Fused path: per-token NLL with the vocabulary streamed through on-chip tiles."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    hidden, weight = hidden.contiguous(), weight.contiguous()
    n, dim = hidden.shape
    out = torch.empty(n, dtype=torch.float32, device=hidden.device)
    grid = (triton.cdiv(n, block_m),)
    _nll_kernel[grid](hidden, weight, bias.contiguous() if bias is not None else weight, targets.contiguous(), out, n,
                      weight.shape[0], dim, hidden.stride(0), weight.stride(0), float(scale), float(softcap or 1.0),
                      HAS_BIAS=bias is not None, HAS_SOFTCAP=softcap is not None,
                      BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return out


def token_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None,
              scale: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """Per-token NLL (fp32): the Triton kernel on CUDA, the chunked reference elsewhere."""
    if hidden.is_cuda and triton is not None:
        return triton_nll(hidden, weight, targets, bias, scale, softcap)
    return chunked_nll(hidden, weight, targets, bias=bias, scale=scale, softcap=softcap)
