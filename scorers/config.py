"""How a stage names its scorer (`scorer:` in the run config) and loads it, in the worker that runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import Field

from winnow.schemas.config import StrictModel

ACTORS_HELP = ("model actors serving the stage, each loading the model once for all shards (default: as many as "
               "num_gpus fits on the cluster's GPUs; none without GPUs: each shard task loads the model)")


class ModelResources(StrictModel):
    """Where a stage's models run: the settings every model-bearing stage config shares."""

    batch_size: int = Field(512, ge=1, description="documents per scoring call")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_gpus: float = Field(0, ge=0, description="GPUs each scoring task or model actor asks Ray for (0: CPU)")
    actors: int | None = Field(None, ge=0, description=ACTORS_HELP)


class ScorerConfig(ModelResources):
    """Where a stage's model lives and how to run it."""

    model: str = Field(description="fastText .bin/.ftz file, or a Hugging Face model directory")
    kind: Literal["fasttext", "transformer"] = "fasttext"
    max_length: int = Field(512, ge=8, description="transformer: tokens per document (longer ones truncated)")
    max_batch_tokens: int | None = Field(
        None, ge=64, description="transformer: padded tokens per forward pass (default 4096 on CPU, 32768 on GPU)")


class Scorer(Protocol):
    labels: list[str]
    positive: str

    def predict_all(self, texts: list[str]) -> dict[str, np.ndarray]: ...


FASTTEXT_MAGIC = 793712314  # the int32 every fastText .bin/.ftz file starts with


def model_file_problem(path: str, kind: str) -> str | None:
    """What is wrong with a model path before anything loads it (None: it looks like a `kind` model):
    a fastText file that is missing, empty or not fastText's format; a Hugging Face directory without
    a readable config.json."""
    target = Path(path)
    if kind == "fasttext":
        if not target.is_file():
            return "the fastText model does not exist" if not target.exists() else "the fastText model is not a file"
        with target.open("rb") as f:
            head = f.read(4)
        if len(head) < 4 or int.from_bytes(head, "little", signed=True) != FASTTEXT_MAGIC:
            return "not a fastText model (.bin/.ftz): its header is not fastText's"
        return None
    config = target / "config.json"
    if not target.is_dir():
        return "the Hugging Face model directory does not exist"
    if not config.is_file():
        return "not a Hugging Face model directory (no config.json)"
    try:
        json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        return f"its config.json is not valid JSON ({err})"
    return None


def load_scorer(config) -> Scorer:
    """The scorer a stage's `scorer:` config describes (a stage loads it in `setup`, once per process)."""
    if config.kind == "fasttext":
        from winnow.scorers.fasttext import FastTextScorer

        return FastTextScorer(config.model)
    from winnow.scorers.transformer import TransformerScorer

    return TransformerScorer(config.model, max_length=config.max_length, max_batch_tokens=config.max_batch_tokens,
                             device=config.device)


def positive_label(config, label: str | None) -> str:
    """The label whose probability is a document's score, decided before any work: the configured
    `label`, else the one the model card names (a regressor's single output needs neither). Never
    guessed from the order of the model's labels: released models differ on which comes first
    (DCLM's lists `hq` after `cc`), and a wrong guess keeps the worst documents."""
    if label is not None:
        return label
    if config.kind == "fasttext":
        from winnow.scorers.fasttext import FastTextScorer, card_path

        card = card_path(config.model)
        if card.exists():
            return json.loads(card.read_text())["positive_label"]
        labels = FastTextScorer(config.model).labels
        where = f"the fastText model {config.model} has no model card ({card.name})"
    else:
        model_config = Path(config.model) / "config.json"
        if not model_config.is_file():
            raise FileNotFoundError(f"not a Hugging Face model directory (no config.json): {config.model}")
        card = Path(config.model) / "model_card.json"  # written by `winnow train ... --kind transformer`
        if card.is_file():
            return json.loads(card.read_text())["positive_label"]
        id2label = json.loads(model_config.read_text()).get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}
        labels = [id2label[k] for k in sorted(id2label, key=int)]
        if len(labels) == 1:  # a regressor: its one output (TransformerScorer calls an unnamed one `score`)
            return "score" if labels == ["LABEL_0"] else labels[0]
        where = f"the classifier {config.model} does not say which of its labels is the positive one"
    raise ValueError(f"{where}: set `label:` in the stage's config to the label that means keep, one of {labels}")
