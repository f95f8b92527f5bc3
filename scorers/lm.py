"""Causal-LM document scoring: total NLL (nats), mean NLL per token and bits per character.

Documents longer than the model's context are scored with a sliding window: windows of `context`
tokens start every `stride` tokens and each window scores only the tokens the previous one did not,
so every token is scored exactly once (the first with a BOS/EOS token as context when the
tokenizer has one). Windows from all documents are sorted by length and batched under a token
budget; the LM head and cross-entropy run through `winnow.gpu.fused_ce.token_nll`, which never
materialises the full (tokens x vocab) logits in fp32.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from winnow.gpu.engine import pick_device, plan_batches
from winnow.gpu.fused_ce import token_nll


class LMScorer:
    def __init__(self, path: str | Path, context: int | None = None, stride: int | None = None,
                 device: str = "auto", max_batch_tokens: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"not a Hugging Face model directory (no config.json): {path}")
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).to(self.device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None) or self.model.config.n_positions
        self.context = min(context or limit, limit)
        self.stride = stride or self.context
        if not 0 < self.stride <= self.context:
            raise ValueError(f"stride {self.stride} must be in (0, context {self.context}]")
        self.start_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None \
            else self.tokenizer.eos_token_id
        self.max_batch_tokens = max_batch_tokens or (32768 if self.device.type == "cuda" else 4096)

    def windows(self, ids: list[int]) -> list[tuple[list[int], int]]:
        """(window tokens, number of trailing tokens it scores) covering every token once."""
        seq = ([self.start_id] if self.start_id is not None else []) + ids
        out, scored_until = [], 1  # position 0 has no context
        begin = 0
        while scored_until < len(seq):
            end = min(begin + self.context, len(seq))
            out.append((seq[begin:end], end - scored_until))
            scored_until = end
            begin = min(begin + self.stride, end - 1)  # keep at least one token of context
        return out

    def token_nlls(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token NLL of every document (nats)."""
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        jobs = [(doc, w, n) for doc, ids in enumerate(encoded) for w, n in self.windows(ids)]
        results: list[list[np.ndarray]] = [[] for _ in texts]
        pieces: dict[int, np.ndarray] = {}
        base = self.model.base_model
        head = self.model.get_output_embeddings().weight
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with torch.inference_mode(), autocast:
            for batch in plan_batches([len(w) for _, w, _ in jobs], self.max_batch_tokens):
                width = max(len(jobs[j][1]) for j in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, j in enumerate(batch):
                    ids[row, : len(jobs[j][1])] = torch.tensor(jobs[j][1])
                    mask[row, : len(jobs[j][1])] = 1
                hidden = base(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                rows, cols, targets = [], [], []
                for row, j in enumerate(batch):  # hidden at p-1 predicts token p, for the scored tail
                    length, scored = len(jobs[j][1]), jobs[j][2]
                    positions = range(length - scored, length)
                    rows += [row] * scored
                    cols += [p - 1 for p in positions]
                    targets += [jobs[j][1][p] for p in positions]
                nll = token_nll(hidden[rows, cols], head, torch.tensor(targets, device=self.device)).cpu().numpy()
                offset = 0
                for row, j in enumerate(batch):
                    pieces[j] = nll[offset: offset + jobs[j][2]]
                    offset += jobs[j][2]
        for j, (doc, _, _) in enumerate(jobs):
            results[doc].append(pieces[j])
        return [np.concatenate(r) if r else np.zeros(0, np.float32) for r in results]

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        nlls = self.token_nlls(texts)
        total = np.array([x.sum() for x in nlls], dtype=np.float64)
        tokens = np.array([len(x) for x in nlls])
        chars = np.array([max(len(t), 1) for t in texts])
        return {"total_nll": total, "mean_nll": total / np.maximum(tokens, 1), "n_tokens": tokens,
                "bits_per_char": total / (chars * math.log(2))}


def make_tiny_lm(path: str | Path, tokenizer_dir: str | Path, context: int = 128, hidden: int = 64,
                 layers: int = 2, seed: int = 0, vocab_size: int | None = None) -> Path:
    """A small randomly initialised GPT-2 with winnow's tokenizer, saved as a HF directory
    (`vocab_size` may exceed the tokenizer's, e.g. to measure a 50k-wide LM head)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size or len(tokenizer), n_positions=context, n_embd=hidden, n_layer=layers,
                        n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    path = Path(path)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def train_lm(texts: list[str], out: str | Path, *, init: str | Path | None = None, tokenizer: str | Path | None = None,
             epochs: float = 1.0, seq_len: int = 64, batch_size: int = 16, lr: float = 3e-3, hidden: int = 64,
             layers: int = 2, seed: int = 0, device: str = "auto") -> dict:
    """Train a small GPT-style LM on `texts` (with `tokenizer`), or fine-tune the model at `init`.

    Texts are tokenized with an EOS after each, concatenated and cut into `seq_len` blocks, which
    are visited in a seeded order for `epochs` passes with AdamW. Returns the training figures.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if init is None and tokenizer is None:
        raise ValueError("give a tokenizer to train a new model, or `init` (a model directory) to fine-tune")
    torch.manual_seed(seed)
    dev = pick_device(device)
    if init is not None:
        model_dir = Path(init)
    else:
        model_dir = make_tiny_lm(Path(out), tokenizer, context=max(seq_len, 64), hidden=hidden, layers=layers,
                                 seed=seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(dev).train()
    eos = tok.eos_token_id
    stream = [t for ids in tok(texts, add_special_tokens=False)["input_ids"] for t in ids + [eos]]
    blocks = torch.tensor(stream[: len(stream) // seq_len * seq_len]).view(-1, seq_len)
    if len(blocks) == 0:
        raise ValueError(f"not enough text for one block of {seq_len} tokens")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    steps = max(1, int(epochs * len(blocks) / batch_size))
    losses = []
    for step in range(steps):
        batch = blocks[torch.randint(0, len(blocks), (batch_size,), generator=generator)].to(dev)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return {"steps": steps, "blocks": len(blocks), "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:]))}
