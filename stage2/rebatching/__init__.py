"""Re-batching against a previous run: keep published batches, move as few students as possible.

- :mod:`~stage2.rebatching.previous`: reading and checking the previous run;
- :mod:`~stage2.rebatching.plan`: who is affected (unchanged, changed, new, forced) and which
  batches each group keeps, creates or dissolves;
- :mod:`~stage2.rebatching.solve`: the clustering objective plus move penalties, solved by
  exact penalised assignments;
- :mod:`~stage2.rebatching.identity`: kept batches keep their codes, ids, rooms and shifts;
- :mod:`~stage2.rebatching.diff`: ``rebatch_diff.csv`` and the ``rebatch`` report figures.

The pipeline runs them as :data:`stage2.pipeline.stages.REBATCH_STAGES` when
``rebatch.previous_run`` is set.
"""

from stage2.rebatching.diff import REBATCH_DIFF, RebatchOutcome, course_sse, rebatch_outcome
from stage2.rebatching.identity import keep_rooms, rebatch_codes
from stage2.rebatching.plan import CHANGED, CLASSES, FORCED, NEW, UNCHANGED, GroupRebatch, RebatchPlan, plan_rebatch
from stage2.rebatching.previous import PreviousRun, load_previous_run, pinned_ids
from stage2.rebatching.solve import Rebatching, penalised_labels, rebatch_clustering

__all__ = [
    "CHANGED",
    "CLASSES",
    "FORCED",
    "NEW",
    "REBATCH_DIFF",
    "UNCHANGED",
    "GroupRebatch",
    "PreviousRun",
    "RebatchOutcome",
    "RebatchPlan",
    "Rebatching",
    "course_sse",
    "keep_rooms",
    "load_previous_run",
    "penalised_labels",
    "pinned_ids",
    "plan_rebatch",
    "rebatch_clustering",
    "rebatch_codes",
    "rebatch_outcome",
]
