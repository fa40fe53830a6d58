"""A table of named stages and the one loop that runs them (Kedro's node/runner idea).

A :class:`Stage` is a plain function with named inputs and outputs. :class:`StageRunner`
runs a sequence of them over a *catalog* (a dict of named values): it checks the wiring
before anything runs, times each stage (``stage_start``/``stage_done`` events with peak
memory, the progress display), and saves and restores the results of checkpointed stages, so
a resumed run continues from its last completed stage. A variant of the pipeline (a dry run,
a re-batching against a previous run) is another table, not another copy of this loop.

Every strict problem at once: a stage marked ``records_problems`` does not raise the problems
``strict=true`` makes errors (an undersized group, a batch without a room, a faculty shortfall)
but records them in its outputs' ``problems`` lists, and the run goes on, so that later stages
find theirs too. The runner collects them and raises one error with all of them
(:func:`stage2.errors.strict_failure`) after the last stage, before anything is published, or
as soon as a stage fails outright (the stages after it are not run, and the error says so).
Adding a kind of problem is marking its stage ``records_problems=True``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from stage2.checkpoints import CheckpointStore
from stage2.errors import Stage2Error, strict_failure
from stage2.memory import peak_rss_mb, return_memory_promptly, trim_heap
from stage2.runlog import audit

Catalog = dict[str, Any]


@dataclass(frozen=True)
class Stage:
    """One named step: ``outputs = func(*inputs)``, names looked up in the catalog.

    A stage with one output returns it; with several, a tuple in ``outputs`` order.
    ``checkpoint``: its outputs are saved after it runs and restored on ``resume=true``.
    ``after``: called with the catalog once the outputs are in it, whether computed or
    restored (the audit trail of decisions, tracking tags).
    ``records_problems``: its outputs carry a ``problems`` list (:class:`~stage2.errors.Stage2Error`
    found under ``strict``), which the runner collects and raises, all at once, at the end."""

    name: str
    func: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    checkpoint: bool = False
    after: Callable[[Catalog], None] | None = None
    records_problems: bool = False


def check_wiring(stages: Sequence[Stage], provided: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every input is provided or made by an earlier stage, and
    no name is made twice."""
    available = set(provided)
    for stage in stages:
        if missing := [name for name in stage.inputs if name not in available]:
            raise ValueError(f"stage {stage.name!r} needs {missing}, which no earlier stage makes")
        if made_twice := [name for name in stage.outputs if name in available]:
            raise ValueError(f"stage {stage.name!r} makes {made_twice} again")
        available.update(stage.outputs)


class StageRunner:
    """Runs stages in order; ``runtimes`` holds each stage's wall time in seconds.

    ``checkpoints`` makes the checkpoint store from the catalog when the first checkpointed
    stage is reached (its key needs the input's digest); ``resume`` restores saved outputs
    instead of recomputing them. Without ``resume`` old checkpoints are cleared first."""

    def __init__(self, progress: Any = None, checkpoints: Callable[[Catalog], CheckpointStore] | None = None,
                 resume: bool = False) -> None:
        self.progress = progress
        self.runtimes: dict[str, float] = {}
        self.resume = resume
        #: the last stage restored from its checkpoint, if any
        self.resumed_from: str | None = None
        self._make_store = checkpoints
        self._store: CheckpointStore | None = None

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time a step as a stage (for publishing steps that are not table stages)."""
        start = time.perf_counter()
        audit("stage_start", "stage %s ...", name, stage=name)
        if self.progress is not None:
            self.progress.start(name)
        yield
        trim_heap()
        self.runtimes[name] = time.perf_counter() - start
        if self.progress is not None:
            self.progress.done(name, self.runtimes[name])
        audit("stage_done", "stage %s done in %.3f s", name, self.runtimes[name], stage=name,
              seconds=round(self.runtimes[name], 4), peak_memory_mb=round(peak_rss_mb(), 1))

    def run(self, stages: Sequence[Stage], catalog: Catalog) -> Catalog:
        """Run ``stages`` over ``catalog`` (updated in place and returned).

        Raises the problems the stages recorded (``records_problems``), all in one error, after
        the last stage; a stage's own :class:`~stage2.errors.Stage2Error` after earlier recorded
        problems joins them, naming the stages that could not run."""
        check_wiring(stages, list(catalog))
        return_memory_promptly()
        problems: list[Stage2Error] = []
        for position, stage in enumerate(stages):
            try:
                values = self._restore(stage, catalog)
                if values is None:
                    with self.timed(stage.name):
                        result = stage.func(*(catalog[name] for name in stage.inputs))
                    values = _named_outputs(stage, result)
                    if stage.checkpoint:
                        self._checkpoints(catalog).save(stage.name, values)
            except Stage2Error as exc:
                if not problems:
                    raise
                not_run = tuple(later.name for later in stages[position + 1:])
                raise strict_failure([*problems, exc], not_run=not_run, failed_stage=stage.name) from exc
            catalog.update(values)
            if stage.after is not None:
                stage.after(catalog)
            if stage.records_problems:
                found = [problem for name in stage.outputs for problem in getattr(catalog[name], "problems", ())]
                for problem in found:
                    audit("strict_problem", "stage %s: %s (strict=true: the run goes on to find every problem, "
                          "then fails)", stage.name, problem, level=logging.WARNING, stage=stage.name,
                          code=problem.code)
                problems += found
        if problems:
            raise strict_failure(problems)
        return catalog

    def _checkpoints(self, catalog: Catalog) -> CheckpointStore:
        if self._store is None:
            if self._make_store is None:
                raise ValueError("a checkpointed stage needs a runner with a checkpoint store")
            self._store = self._make_store(catalog)
            if not self.resume:
                self._store.clear()
        return self._store

    def _restore(self, stage: Stage, catalog: Catalog) -> Mapping[str, Any] | None:
        if not (stage.checkpoint and self.resume):
            return None
        saved = self._checkpoints(catalog).load(stage.name)
        if not isinstance(saved, dict) or set(saved) != set(stage.outputs):
            return None  # none, or written by another version of the stage
        self.resumed_from = stage.name
        audit("checkpoint_restored", "stage %s restored from its checkpoint", stage.name, stage=stage.name)
        return saved


def _named_outputs(stage: Stage, result: Any) -> dict[str, Any]:
    if len(stage.outputs) == 1:
        return {stage.outputs[0]: result}
    if not isinstance(result, tuple) or len(result) != len(stage.outputs):
        raise TypeError(f"stage {stage.name!r} must return a tuple of {len(stage.outputs)} values {stage.outputs}")
    return dict(zip(stage.outputs, result, strict=True))
