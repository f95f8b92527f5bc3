"""The progress bar of a segment: shards done of all, documents per second, elapsed time (stderr)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text


class _DocsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        docs = task.fields.get("docs", 0)
        elapsed = task.elapsed or 0
        return Text(f"{docs / elapsed:,.0f} docs/s" if elapsed > 0 else "", style="cyan")


@contextlib.contextmanager
def progress_bar(show: bool, name: str, total: int, done: int) -> Iterator[Callable[[int], None]]:
    """A shard progress bar; yields `advance(docs)`, called after each finished shard."""
    if not show:
        yield lambda docs: None
        return
    columns = [TextColumn(f"[bold]{name:<12}"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
               _DocsPerSecond(), TimeElapsedColumn()]
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(name, total=total, completed=done, docs=0)

        def advance(docs: int) -> None:
            progress.update(task, advance=1, docs=progress.tasks[0].fields["docs"] + docs)

        yield advance
