"""CoLoR-Filter (Brandfonbrener et al. 2024): `color_score` = mean NLL per token under the prior LM
minus under the conditional LM (the prior fine-tuned on target text). Documents the target data
made more likely score high; exactly ⌊N/tau⌋ documents of the pool are kept, the best-scoring (ties
by id), the cut-off found over the whole corpus as for quality's top share. With `selection: block`,
each shard is cut into blocks of `block_size` documents (tau * n, in row order) and the top 1/tau
of every block is kept, as in the paper's batch-wise selection of n from tau * n."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.schemas.config import StageConfig
from winnow.scorers.config import ModelResources
from winnow.stages.base import Plot, require_model
from winnow.stages.scoring import Cutoff, TopShareStage, Verdict, exact_share


class ColorFilterConfig(StageConfig, ModelResources):
    """CoLoR-Filter: score = mean NLL under the prior LM - mean NLL under the conditional LM; keep the top 1/tau."""

    name: Literal["color_filter"] = "color_filter"
    prior: str = Field(description="causal LM directory (Hugging Face format)")
    conditional: str = Field(description="the prior fine-tuned on target text")
    tau: float = Field(4.0, gt=1.0, description="keep the ⌊N/tau⌋ highest-scoring documents of the pool")
    selection: Literal["global", "block"] = Field(
        "global", description="global: one corpus-wide cut-off; block: the top 1/tau of every block of documents")
    block_size: int = Field(256, ge=2, description="documents per block (tau * n) when selection is 'block'")
    context: int | None = Field(None, ge=8, description="tokens per window (default: the model's context)")
    stride: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1, description="documents per scoring call")
    mode: Literal["filter", "annotate"] = "filter"


class ColorFilter(TopShareStage):
    Config = ColorFilterConfig
    plots = (Plot("color_score"),)
    primary = "color_score"

    def check_files(self) -> None:
        for path in (self.config.prior, self.config.conditional):
            require_model(self.name, path, "transformer")

    def resources(self) -> ModelResources:
        return self.config

    def setup(self):
        from winnow.scorers.lm import LMScorer

        cfg = self.config
        return tuple(LMScorer(path, context=cfg.context, stride=cfg.stride, device=cfg.device)
                     for path in (cfg.prior, cfg.conditional))

    def score_here(self, texts: list[str]) -> dict[str, np.ndarray]:
        cfg = self.config
        prior, conditional = self.loaded
        out: dict[str, list] = {"color_score": [], "prior_nll": [], "conditional_nll": []}
        for i in range(0, len(texts), cfg.batch_size):
            chunk = texts[i:i + cfg.batch_size]
            p, c = prior.score(chunk)["mean_nll"], conditional.score(chunk)["mean_nll"]
            out["color_score"].append(p - c)
            out["prior_nll"].append(p)
            out["conditional_nll"].append(c)
        return {k: np.concatenate(v).astype(np.float32) if v else np.zeros(0, np.float32) for k, v in out.items()}

    def shard_keep(self, scores: pa.Table) -> np.ndarray | None:
        if self.config.selection != "block":
            return None
        return block_top(scores.column("color_score").to_numpy(), self.config.block_size, self.config.tau)

    def verdict(self, table: pa.Table, scores: dict[str, np.ndarray], keep: np.ndarray | None,
                cutoff: Cutoff) -> Verdict:
        if keep is None:
            return super().verdict(table, scores, keep, cutoff)
        details = [f"color_score {s:.4f} not in the top 1/{self.config.tau:g} of its block of {self.config.block_size}"
                   for s in scores["color_score"][~keep]]
        return keep, ["below_top_share"] * len(details), details

    def share(self) -> Fraction:
        return 1 / exact_share(self.config.tau)

    def share_by(self) -> str:
        return "documents"


def block_top(scores: np.ndarray, block_size: int, tau: float) -> np.ndarray:
    """Keep mask: in each consecutive block of `block_size` scores, the ceil(len / tau) highest
    (ties go to the earlier row, so the choice is deterministic)."""
    keep = np.zeros(len(scores), dtype=bool)
    for start in range(0, len(scores), block_size):
        block = scores[start:start + block_size]
        n = math.ceil(len(block) / tau)
        keep[start + np.argsort(-block, kind="stable")[:n]] = True
    return keep
