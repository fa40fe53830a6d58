"""A progress display of the pipeline's stages, on a terminal only.

::

    with stage_progress(["validation", "sizing", "clustering"]) as progress:
        progress.start("validation")
        ...
        progress.done("validation", seconds)

On a TTY (``enabled=None`` → ``sys.stderr.isatty()``) this shows a Rich progress bar on
stderr: the running stage with a spinner, then one line per finished stage with its time.
Otherwise every call does nothing, so logs, CI output and redirected runs stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class StageProgress:
    """What :func:`stage_progress` yields; this base class shows nothing."""

    def start(self, name: str) -> None:
        """Stage ``name`` begins."""

    def done(self, name: str, seconds: float) -> None:
        """Stage ``name`` ended after ``seconds``."""


class _RichStageProgress(StageProgress):
    def __init__(self, progress: Any, stage_names: Sequence[str]) -> None:
        self._progress = progress
        self._total = len(stage_names)
        self._task = progress.add_task("starting", total=max(self._total, 1))
        self._finished: set[str] = set()

    def start(self, name: str) -> None:
        self._progress.update(self._task, description=f"stage [bold]{name}[/bold]")

    def done(self, name: str, seconds: float) -> None:
        self._progress.console.print(f"  [green]✓[/green] {name:<14} {seconds:8.2f} s", highlight=False)
        if name not in self._finished:
            self._finished.add(name)
            if len(self._finished) > self._total:  # a stage not announced: grow the bar
                self._total = len(self._finished)
                self._progress.update(self._task, total=self._total)
            self._progress.advance(self._task)
        self._progress.update(self._task, description="")


@contextmanager
def stage_progress(stage_names: list[str], enabled: bool | None = None) -> Iterator[StageProgress]:
    """Yield an object with ``.start(name)`` and ``.done(name, seconds)``: a Rich progress
    display on stderr when ``enabled`` (default: stderr is a terminal), else no-ops."""
    if enabled is None:
        enabled = _stderr_is_tty()
    if not enabled:
        yield StageProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        yield _RichStageProgress(progress, list(stage_names))


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


__all__ = ["StageProgress", "stage_progress"]
