"""Causal-LM document scoring: total NLL (nats), mean NLL per token and bits per character.

Documents longer than the model's context are scored with a sliding window: windows of `context`
tokens start every `stride` tokens and each window scores only the tokens the previous one did not,
so every token is scored exactly once (the first with a BOS/EOS token as context when the
tokenizer has one). Windows from all documents are sorted by length and batched under a token
budget; the LM head and cross-entropy run through `winnow.gpu.fused_ce.token_nll`, which never
materialises the full (tokens x vocab) logits in fp32.

A score must equal the model's own loss. The fused path reproduces the heads it knows (a bias,
logit scaling, final-logit soft-capping: see `OutputHead`); at load, a probe sequence is scored and
compared with `model(input_ids, labels=...).loss`. When the fused head disagrees (a head with parts
winnow does not know), scoring falls back to the model's own logits, in batches small enough to
bound the (tokens x vocab) logits; a model whose own logits do not give its loss either is refused.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from winnow.gpu.engine import pad_batch, pick_device, plan_batches
from winnow.gpu.fused_ce import token_nll

PROBE_TOKENS = 32
PROBE_RTOL = 1e-4
LOGIT_BUDGET = {"cuda": 1 << 28, "cpu": 1 << 25}  # logits (floats) per batch on the model-logits path


@dataclass
class OutputHead:
    """A causal LM's output head in the form the fused NLL computes: softcap(scale * (h @ W.T + b))."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None

    @classmethod
    def of(cls, model) -> OutputHead | None:
        """The head read off the model and its config (None: no linear output layer to read)."""
        head = model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear):
            return None
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        scale = 1.0
        if getattr(config, "logits_scaling", None):  # Granite: logits / logits_scaling
            scale /= config.logits_scaling
        if getattr(config, "logit_scale", None):  # Cohere: logits * logit_scale
            scale *= config.logit_scale
        return cls(head.weight, head.bias, scale, getattr(config, "final_logit_softcapping", None))

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return token_nll(hidden, self.weight, targets, self.bias, self.scale, self.softcap)


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
        self.head = self._checked_head(path)
        if self.head is None:  # the model's own logits: bound tokens x vocab per batch
            vocab = self.model.get_output_embeddings().weight.shape[0]
            self.max_batch_tokens = min(self.max_batch_tokens,
                                        max(self.context, LOGIT_BUDGET.get(self.device.type, 1 << 25) // vocab))

    def _checked_head(self, path: Path) -> OutputHead | None:
        """The fused head if it reproduces the model's own loss on a probe sequence, else None (the
        model's own logits) if those do; a model neither reproduces is refused."""
        vocab = min(len(self.tokenizer), self.model.get_input_embeddings().num_embeddings)
        ids = torch.randint(0, vocab, (1, PROBE_TOKENS), generator=torch.Generator().manual_seed(0)).to(self.device)
        rows, cols = [0] * (PROBE_TOKENS - 1), list(range(PROBE_TOKENS - 1))
        with torch.inference_mode():
            expected = self.model(input_ids=ids, labels=ids).loss.item() * (PROBE_TOKENS - 1)
            mask = torch.ones_like(ids)
            fused, got = OutputHead.of(self.model), {}
            for name, head in ([("fused head", fused)] if fused else []) + [("model's logits", None)]:
                got[name] = self._nll(ids, mask, rows, cols, ids[0, 1:], head).sum().item()
                if math.isclose(got[name], expected, rel_tol=PROBE_RTOL):
                    return head
        raise ValueError(f"cannot reproduce the loss of {path} ({type(self.model).__name__}): on a probe sequence "
                         f"its own loss is {expected:.6f} nats, winnow's " +
                         ", ".join(f"{k} {v:.6f}" for k, v in got.items()))

    def _nll(self, ids: torch.Tensor, mask: torch.Tensor, rows: list[int], cols: list[int], targets: torch.Tensor,
             head: OutputHead | None) -> torch.Tensor:
        """NLL (fp32) of `targets` predicted at positions (rows, cols) of a padded batch."""
        if head is not None:
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            return head.nll(hidden[rows, cols], targets)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[rows, cols].float()
        return torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[:, None])[:, 0]

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
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with torch.inference_mode(), autocast:
            for batch in plan_batches([len(w) for _, w, _ in jobs], self.max_batch_tokens):
                ids, mask = pad_batch([jobs[j][1] for j in batch], pad_id=0)
                rows, cols, targets = [], [], []
                for row, j in enumerate(batch):  # hidden at p-1 predicts token p, for the scored tail
                    length, scored = len(jobs[j][1]), jobs[j][2]
                    positions = range(length - scored, length)
                    rows += [row] * scored
                    cols += [p - 1 for p in positions]
                    targets += [jobs[j][1][p] for p in positions]
                nll = self._nll(ids.to(self.device), mask.to(self.device), rows, cols,
                                torch.tensor(targets, device=self.device), self.head).cpu().numpy()
                offset = 0
                for j in batch:
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
                 layers: int = 2, seed: int = 0, vocab_size: int | None = None, heads: int = 4) -> Path:
    """A randomly initialised GPT-2 (small by default; any shape for benchmarks) with winnow's tokenizer,
    saved as a HF directory (`vocab_size` may exceed the tokenizer's, e.g. to measure a 128k-wide LM head)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size or len(tokenizer), n_positions=context, n_embd=hidden, n_layer=layers,
                        n_head=heads,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    path = Path(path)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def block_batches(n_blocks: int, batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """Batches of block indices: every whole epoch is a seeded permutation that visits each block exactly
    once (its last batch may be smaller); a fractional last epoch takes the start of its permutation."""
    generator = torch.Generator().manual_seed(seed)
    batches, left = [], max(1, round(epochs * n_blocks))
    while left > 0:
        order = torch.randperm(n_blocks, generator=generator).tolist()[:left]
        batches += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        left -= len(order)
    return batches


def cosine_with_warmup(step: int, steps: int, warmup: int, final: float = 0.1) -> float:
    """Learning-rate factor: linear warm-up to 1 over `warmup` steps, then cosine decay to `final`
    (OLMo's `cosine_with_warmup` with `alpha_f` 0.1, as color-filter-olmo trains)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def train_lm(texts: list[str], out: str | Path, *, init: str | Path | None = None, tokenizer: str | Path | None = None,
             epochs: float = 1.0, seq_len: int = 64, batch_size: int = 16, lr: float | None = None,
             warmup_steps: int = 100, weight_decay: float = 0.0, hidden: int = 64, layers: int = 2, seed: int = 0,
             device: str = "auto") -> dict:
    """Train a small GPT-style LM on `texts` (with `tokenizer`), or fine-tune the model at `init` (as
    CoLoR-Filter makes its conditional model from the prior).

    Texts are tokenized with an EOS after each, concatenated and cut into `seq_len` blocks; each epoch
    visits every block once in a seeded order (`block_batches`). The optimiser follows color-filter-
    olmo's fine-tuning config: AdamW (betas 0.9/0.95, eps 1e-15, weight decay 0), peak learning rate
    1e-3 (3e-3 for a new small model), `warmup_steps` of linear warm-up (at most a quarter of a short
    run) then cosine decay to a tenth, gradients clipped at norm 1. Returns the training figures.
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
    lr = lr if lr is not None else (1e-3 if init is not None else 3e-3)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(dev).train()
    eos = tok.eos_token_id
    stream = [t for ids in tok(texts, add_special_tokens=False)["input_ids"] for t in ids + [eos]]
    blocks = torch.tensor(stream[: len(stream) // seq_len * seq_len]).view(-1, seq_len)
    if len(blocks) == 0:
        raise ValueError(f"not enough text for one block of {seq_len} tokens")
    batches = block_batches(len(blocks), batch_size, epochs, seed)
    warmup = min(warmup_steps, len(batches) // 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-15, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_with_warmup(step, len(batches), warmup))
    losses = []
    for batch_ids in batches:
        batch = blocks[batch_ids].to(dev)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return {"steps": len(batches), "blocks": len(blocks), "warmup_steps": warmup, "lr": lr,
            "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:]))}
