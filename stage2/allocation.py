"""Room and shift allocation stage: give each batch a home (room, shift) slot.

Rules: a slot hosts at most one batch; a batch fits its room (``size <= threshold × capacity``
for the hard ``capacity_limit`` rule, threshold 1 by default). Among feasible allocations the
solver places as many batches as possible, then maximises

    score(batch, slot) = shift_preference_weight × share of members preferring the slot's shift
                         + size / capacity  (seat utilisation)

Exact (``scipy.optimize.linear_sum_assignment`` on batches × slots, with one "unplaced" column
per batch) when there are at most ``exact_max_pairs`` pairs; otherwise a greedy best fit:
largest batches first, each into the free room of its most preferred shift with the smallest
sufficient capacity.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from stage2.config.settings import BatchingSettings
from stage2.errors import InfeasibleError

#: reward for placing a batch at all; exceeds any achievable preference + utilisation score
PLACEMENT_REWARD = 1_000.0
#: cost of a forbidden (batch, slot) pair in the exact solver
FORBIDDEN_COST = 1e9


@dataclass
class Allocation:
    """``room_id``/``shift_id``/``capacity`` per batch (``None``/0 when unplaced)."""

    room_id: list[str | None]
    shift_id: list[str | None]
    capacity: np.ndarray
    method: str
    warnings: list[str] = field(default_factory=list)

    @property
    def placed(self) -> np.ndarray:
        return np.array([r is not None for r in self.room_id], dtype=bool)


def capacity_threshold(settings: BatchingSettings) -> float:
    """The strictest hard ``capacity_limit`` threshold (1.0 when there is none)."""
    thresholds = [r.threshold for r in settings.rules if r.rule_type == "capacity_limit" and r.is_hard]
    return min(thresholds) if thresholds else 1.0


def home_rooms(rooms: pd.DataFrame, room_types: list[str] | None) -> pd.DataFrame:
    if room_types:
        wanted = {t.upper() for t in room_types}
        rooms = rooms.loc[rooms["room_type"].astype("string").str.upper().isin(wanted)]
    return rooms.sort_values("room_id", kind="stable").reset_index(drop=True)


def allocate_rooms(
    batch_sizes: np.ndarray,
    shift_preferences: np.ndarray,
    rooms: pd.DataFrame,
    shifts: pd.DataFrame,
    settings: BatchingSettings,
    *,
    room_types: list[str] | None = None,
    shift_preference_weight: float = 1.0,
    exact_max_pairs: int = 4_000_000,
    batch_labels: list[str] | None = None,
) -> Allocation:
    """Allocate slots to batches.

    ``shift_preferences[b, s]`` = members of batch ``b`` preferring ``shifts`` row ``s``.
    Unplaceable batches are reported in ``warnings`` (INSUFFICIENT_ROOMS under strict).
    """
    n_batches = int(batch_sizes.size)
    rooms = home_rooms(rooms, room_types)
    shift_ids = shifts["shift_id"].astype(str).tolist()
    capacities = rooms["capacity"].to_numpy(dtype=np.int64)
    threshold = capacity_threshold(settings)
    usable = np.floor(capacities * threshold + 1e-9).astype(np.int64)
    n_slots = len(rooms) * len(shift_ids)
    slot_room = np.repeat(np.arange(len(rooms)), len(shift_ids))
    slot_shift = np.tile(np.arange(len(shift_ids)), len(rooms))

    if n_batches == 0:
        return Allocation([], [], np.zeros(0, np.int64), "none")
    if n_slots and n_batches * (n_slots + n_batches) <= exact_max_pairs:
        chosen = _allocate_exact(batch_sizes, shift_preferences, capacities, usable, slot_room, slot_shift, shift_preference_weight)
        method = "exact"
    else:
        chosen = _allocate_greedy(batch_sizes, shift_preferences, capacities, usable, len(shift_ids))
        method = "greedy"

    room_id: list[str | None] = []
    shift_id: list[str | None] = []
    capacity = np.zeros(n_batches, dtype=np.int64)
    room_ids = rooms["room_id"].astype(str).tolist()
    for b, slot in enumerate(chosen):
        if slot < 0:
            room_id.append(None)
            shift_id.append(None)
        else:
            room_id.append(room_ids[slot_room[slot]])
            shift_id.append(shift_ids[slot_shift[slot]])
            capacity[b] = capacities[slot_room[slot]]
    allocation = Allocation(room_id, shift_id, capacity, method)
    unplaced = np.flatnonzero(~allocation.placed)
    if unplaced.size:
        labels = batch_labels or [str(b) for b in range(n_batches)]
        largest = int(usable.max()) if usable.size else 0
        names = ", ".join(f"{labels[b]} ({batch_sizes[b]} students)" for b in unplaced[:20])
        message = (
            f"{unplaced.size} of {n_batches} batches have no home room: {names}"
            f"{' ...' if unplaced.size > 20 else ''}; {n_slots} (room, shift) slots, largest usable capacity {largest}"
        )
        if settings.strict:
            raise InfeasibleError(message, code="INSUFFICIENT_ROOMS", where="rooms.csv / shifts.csv",
                                  details={"shortfall": int(unplaced.size)})
        allocation.warnings.append(f"[INSUFFICIENT_ROOMS] {message}")
    return allocation


def _scores(sizes: np.ndarray, prefs: np.ndarray, capacities: np.ndarray, slot_room: np.ndarray,
            slot_shift: np.ndarray, weight: float) -> np.ndarray:
    share = prefs[:, slot_shift] / np.maximum(sizes, 1)[:, None]
    utilisation = sizes[:, None] / np.maximum(capacities[slot_room], 1)[None, :]
    return weight * share + utilisation


def _allocate_exact(sizes, prefs, capacities, usable, slot_room, slot_shift, weight) -> np.ndarray:
    n_batches, n_slots = sizes.size, slot_room.size
    score = _scores(sizes, prefs, capacities, slot_room, slot_shift, weight)
    feasible = sizes[:, None] <= usable[slot_room][None, :]
    cost = np.where(feasible, -(score + PLACEMENT_REWARD), FORBIDDEN_COST)
    # one private "unplaced" column per batch, so a complete assignment always exists
    unplaced = np.full((n_batches, n_batches), FORBIDDEN_COST / 2)
    np.fill_diagonal(unplaced, 0.0)
    rows, cols = linear_sum_assignment(np.hstack([cost, unplaced]))
    chosen = np.full(n_batches, -1, dtype=np.int64)
    for b, c in zip(rows, cols):
        if c < n_slots and feasible[b, c]:
            chosen[b] = c
    return chosen


def _allocate_greedy(sizes, prefs, capacities, usable, n_shifts) -> np.ndarray:
    # per shift: free rooms as a sorted list of (usable capacity, room index)
    free = [sorted((int(usable[r]), r) for r in range(capacities.size)) for _ in range(n_shifts)]
    chosen = np.full(sizes.size, -1, dtype=np.int64)
    order = np.lexsort((np.arange(sizes.size), -sizes))
    for b in order:
        # shifts by members' preference, then by index (deterministic)
        for s in np.lexsort((np.arange(n_shifts), -prefs[b])):
            rooms_free = free[s]
            i = bisect.bisect_left(rooms_free, (int(sizes[b]), -1))
            if i < len(rooms_free):
                _, room = rooms_free.pop(i)
                chosen[b] = room * n_shifts + s
                break
    return chosen
