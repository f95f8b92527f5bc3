"""PreSelect: a fastText classifier trained on predictive-strength labels (`winnow train preselect`)
scores every document as `preselect_score`; the top share by characters (default 10%) is kept,
the cut-off found over the whole corpus."""

from __future__ import annotations

from winnow.stages.quality import Quality


class Preselect(Quality):
    name = "preselect"
    primary = "preselect_score"
