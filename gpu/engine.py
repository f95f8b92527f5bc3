"""Batched inference for encoder models: length-sorted, token-budgeted batches, no wasted padding.

Documents are sorted by length and packed into batches whose padded size (rows x longest row,
rounded up to a multiple of 8 for tensor cores) stays under a token budget, so short documents
are not padded to the length of long ones and long ones do not blow up memory. Runs under
`torch.inference_mode()`, with bf16 autocast on CUDA; on a machine without a GPU the same code
runs on the CPU. Results come back in input order. Forward passes of concurrent calls take turns
(a model actor serves two calls at once, so one call's tokenising overlaps the other's forward).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import torch


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no GPU is available (use 'auto' to fall back to CPU)")
    return torch.device(device)


def plan_batches(lengths: Sequence[int], max_tokens: int, pad_multiple: int = 8) -> list[np.ndarray]:
    """Indices of each batch, longest documents first, padded size within `max_tokens`."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        padded = -(-max(longest, lengths[i]) // pad_multiple) * pad_multiple
        if current and padded * (len(current) + 1) > max_tokens:
            batches.append(np.array(current))
            current, longest = [], 0
            padded = -(-lengths[i] // pad_multiple) * pad_multiple
        current.append(i)
        longest = max(longest, lengths[i])
    if current:
        batches.append(np.array(current))
    return batches


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int,
              pad_multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of right-padded rows, the width rounded up to `pad_multiple`."""
    width = -(-max(len(t) for t in token_ids) // pad_multiple) * pad_multiple
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, tokens in enumerate(token_ids):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


class InferenceEngine:
    """Runs `forward(input_ids, attention_mask) -> (batch, ...) tensor` over token-id lists."""

    def __init__(self, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], pad_id: int,
                 device: torch.device, max_tokens: int | None = None, pad_multiple: int = 8):
        self.forward, self.pad_id, self.device = forward, pad_id, device
        # CPUs run best on batches whose activations stay in cache; GPUs want large batches.
        self.max_tokens = max_tokens or (32768 if device.type == "cuda" else 4096)
        self.pad_multiple = pad_multiple
        self.padded_tokens = 0  # counters for benchmarks: tokens computed vs real tokens
        self.real_tokens = 0
        self.turn = threading.Lock()

    def run(self, token_ids: list[list[int]]) -> np.ndarray:
        if not token_ids:
            return np.zeros((0,), dtype=np.float32)
        lengths = [len(t) for t in token_ids]
        outputs: list[np.ndarray | None] = [None] * len(token_ids)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with self.turn, torch.inference_mode(), autocast:
            for batch in plan_batches(lengths, self.max_tokens, self.pad_multiple):
                ids, mask = pad_batch([token_ids[i] for i in batch], self.pad_id, self.pad_multiple)
                result = self.forward(ids.to(self.device), mask.to(self.device)).float().cpu().numpy()
                for row, i in enumerate(batch):
                    outputs[i] = result[row]
                self.padded_tokens += ids.numel()
                self.real_tokens += int(mask.sum())
        return np.stack(outputs)
