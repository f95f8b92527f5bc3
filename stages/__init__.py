"""One module per stage (its config, its work, its report hints), the stage contract they share
(`base`), and the helpers a stage keeps beside it (`lib/`). The runtime that executes stages is
`winnow.runtime`; nothing here imports it.

Importing this package imports every stage module in it, which defines, and so registers, winnow's
own stages. A stage defined anywhere else registers the same way, by being defined."""

from __future__ import annotations

import importlib
import pkgutil

from winnow.schemas.config import RunConfig
from winnow.stages.base import STAGES, DocumentStage, GlobalStage, RunContext, Stage, StageFileError, StageResult
from winnow.storage.fs import Location
from winnow.storage.index import IndexView

for _module in pkgutil.iter_modules(__path__):
    if not _module.ispkg:  # lib/ holds helpers, imported by the stages that use them
        importlib.import_module(f"{__name__}.{_module.name}")


def build_stage(stage_config, run_config: RunConfig, input_root: str, output: Location | None = None,
                index: IndexView | None = None) -> Stage:
    """The stage object for one entry of the config's `stages` list, its files checked. `output`: the
    run's output (default: the config's, with no fields to fill in); `index`: the run index as of the run."""
    from winnow.storage.fs import resolve

    run = RunContext(input=run_config.input, input_root=input_root,
                     output=output or resolve(run_config.output, run_config.storage.s3), index=index)
    return STAGES[stage_config.name](stage_config, run)


__all__ = ["STAGES", "DocumentStage", "GlobalStage", "RunContext", "Stage", "StageFileError", "StageResult",
           "build_stage"]
