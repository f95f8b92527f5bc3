"""PreSelect: a fastText classifier trained on predictive-strength labels (`winnow train preselect`)
scores every document as `preselect_score`; the top share by characters (default 10%) is kept,
the cut-off found over the whole corpus."""

from __future__ import annotations

from typing import Literal

from winnow.schemas.config import Fraction
from winnow.stages.base import Plot
from winnow.stages.quality import Quality, QualityConfig
from winnow.stages.scoring import TopShareStage


class PreselectConfig(QualityConfig):
    """PreSelect: a fastText scorer trained from predictive-strength labels; keeps the top share by characters."""

    name: Literal["preselect"] = "preselect"
    keep_top: Fraction | None = 0.1
    share_by: Literal["documents", "characters"] = "characters"


class Preselect(Quality):
    Config = PreselectConfig
    plots = (Plot("preselect_score"),)
    primary = "preselect_score"


class PreselectTopShare(TopShareStage, Preselect):
    """PreSelect keeping exactly the top share of the corpus (the default): a global stage."""
