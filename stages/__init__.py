"""One module per stage, and the runtime that executes stages over shards on Ray."""

from __future__ import annotations

from winnow.schemas.config import RunConfig
from winnow.stages.base import DocumentStage, GlobalStage, Stage, StageResult


def build_stage(stage_config, run_config: RunConfig, input_root: str) -> Stage:
    """The stage object for one entry of the config's `stages` list."""
    from winnow.stages.dedup import Dedup
    from winnow.stages.exact_dedup import ExactDedup
    from winnow.stages.heuristics import Heuristics
    from winnow.stages.color_filter import ColorFilter
    from winnow.stages.ingest import Ingest
    from winnow.stages.langid import LangId
    from winnow.stages.preselect import Preselect
    from winnow.stages.quality import Quality
    from winnow.stages.rephrase import Rephrase
    from winnow.stages.tokenize import Tokenize
    from winnow.stages.toxicity import Toxicity

    if stage_config.name == "ingest":
        return Ingest(stage_config, run_config.input, input_root)
    if stage_config.name == "pack":
        from winnow.stages.pack import Pack
        from winnow.storage.fs import resolve

        return Pack(stage_config, resolve(run_config.output, run_config.storage.s3).join("tokens"))
    return {"heuristics": Heuristics, "exact_dedup": ExactDedup, "dedup": Dedup, "quality": Quality,
            "toxicity": Toxicity, "langid": LangId, "tokenize": Tokenize, "preselect": Preselect,
            "color_filter": ColorFilter, "rephrase": Rephrase}[stage_config.name](stage_config)


__all__ = ["DocumentStage", "GlobalStage", "Stage", "StageResult", "build_stage"]
