"""Room and shift allocation stage: give each batch a home (room, shift) slot.

Rules: a slot hosts at most one batch; a batch fits its room (``size <= threshold × capacity``
for the hard ``capacity_limit`` rule, threshold 1 by default). Among feasible allocations the
solver places as many batches as possible, then maximises

    score(batch, slot) = shift_preference_weight × share of members preferring the slot's shift
                         + size / capacity  (seat utilisation)

Rooms of equal capacity are interchangeable within a shift, so slots are aggregated into
(shift, capacity) classes and the assignment is solved exactly as a min-cost flow
(batch → class → sink, an "unplaced" arc per batch priced above any placement) — exact at every
scale, with arcs ≈ batches × classes rather than batches × slots. Each class's rooms then go to
its batches in room-id order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from ortools.graph.python import min_cost_flow

from stage2.config.settings import BatchingSettings, seats_admitted
from stage2.errors import InfeasibleError, Stage2Error

#: extra cost of leaving a batch unplaced: exceeds any score difference, so the flow places
#: as many batches as capacities allow before it optimises scores
UNPLACED_PENALTY = 1_000.0
#: scores are rounded to integers after multiplying by this (the flow solver is integral)
ALLOCATION_COST_SCALE = 1_000_000


@dataclass
class Allocation:
    """``room_id``/``shift_id``/``capacity`` per batch (``None``/0 when unplaced)."""

    room_id: list[str | None]
    shift_id: list[str | None]
    capacity: np.ndarray
    method: str
    warnings: list[str] = field(default_factory=list)
    #: under ``strict``: the ``INSUFFICIENT_ROOMS`` error, recorded (not raised) so that the
    #: run goes on to find its other problems and fails once with all
    problems: list[Stage2Error] = field(default_factory=list)

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
    batch_labels: list[str] | None = None,
    free_slots: np.ndarray | None = None,
    keep_shift: np.ndarray | None = None,
) -> Allocation:
    """Allocate slots to batches.

    ``shift_preferences[b, s]`` = members of batch ``b`` preferring ``shifts`` row ``s``.
    ``free_slots`` (rooms × shifts, rooms in room-id order): the slots that may be used
    (default all); ``keep_shift[b]``: a shift row batch ``b`` should stay in (-1: none), worth
    more than any preference or utilisation difference (a re-batch moving a batch whose room
    closed keeps its shift and takes the closest room). Unplaceable batches are reported in
    ``warnings``; under strict they are a ``problem`` (``INSUFFICIENT_ROOMS``, exit 4).
    """
    n_batches = int(batch_sizes.size)
    rooms = home_rooms(rooms, room_types)
    shift_ids = shifts["shift_id"].astype(str).tolist()
    capacities = rooms["capacity"].to_numpy(dtype=np.int64)
    threshold = capacity_threshold(settings)
    usable = seats_admitted(capacities, threshold)
    n_slots = len(rooms) * len(shift_ids)
    slot_room = np.repeat(np.arange(len(rooms)), len(shift_ids))
    slot_shift = np.tile(np.arange(len(shift_ids)), len(rooms))

    if n_batches == 0:
        return Allocation([], [], np.zeros(0, np.int64), "none")
    chosen = _allocate_flow(batch_sizes, shift_preferences, capacities, usable, len(shift_ids), shift_preference_weight,
                            free_slots, keep_shift)
    method = "min_cost_flow"

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
            allocation.problems.append(InfeasibleError(
                message, code="INSUFFICIENT_ROOMS", where="rooms.csv / shifts.csv",
                details={"shortfall": int(unplaced.size)}))
        else:
            allocation.warnings.append(f"[INSUFFICIENT_ROOMS] {message}")
    return allocation


def _allocate_flow(sizes, prefs, capacities, usable, n_shifts, weight, free_slots=None, keep_shift=None) -> np.ndarray:
    """Chosen slot (room index × n_shifts + shift index) per batch, -1 when unplaced."""
    n_batches = sizes.size
    if capacities.size == 0 or n_shifts == 0:
        return np.full(n_batches, -1, dtype=np.int64)
    class_capacity, first_room, room_class = np.unique(capacities, return_index=True, return_inverse=True)
    class_usable = usable[first_room]  # equal capacities have equal usable seats
    rooms_in_class = np.bincount(room_class, minlength=class_capacity.size)
    n_classes = class_capacity.size * n_shifts
    class_cap = np.repeat(class_capacity, n_shifts)       # class index = capacity class × n_shifts + shift
    class_use = np.repeat(class_usable, n_shifts)
    class_shift = np.tile(np.arange(n_shifts), class_capacity.size)
    class_count = np.repeat(rooms_in_class, n_shifts)
    if free_slots is not None:  # free rooms per (capacity class, shift)
        free = np.zeros((class_capacity.size, n_shifts), dtype=np.int64)
        np.add.at(free, room_class, free_slots.astype(np.int64))
        class_count = free.reshape(-1)

    b, c = np.nonzero(sizes[:, None] <= class_use[None, :])
    share = prefs[b, class_shift[c]] / np.maximum(sizes[b], 1)
    score = weight * share + sizes[b] / np.maximum(class_cap[c], 1)
    ceiling = weight + 1.0  # no score exceeds it: costs below stay non-negative
    if keep_shift is not None:
        score = score + ceiling * (class_shift[c] == keep_shift[b])
        ceiling *= 2
    class_nodes, sink = n_batches, n_batches + n_classes  # batch nodes are 0 .. n_batches - 1
    solver = min_cost_flow.SimpleMinCostFlow()
    starts = np.concatenate([b, np.arange(n_batches), np.arange(n_classes) + class_nodes])
    ends = np.concatenate([c + class_nodes, np.full(n_batches, sink), np.full(n_classes, sink)])
    caps = np.concatenate([np.ones(b.size, np.int64), np.ones(n_batches, np.int64), class_count.astype(np.int64)])
    costs = np.concatenate([
        np.rint((ceiling - score) * ALLOCATION_COST_SCALE),
        np.full(n_batches, np.rint((ceiling + UNPLACED_PENALTY) * ALLOCATION_COST_SCALE)),
        np.zeros(n_classes),
    ]).astype(np.int64)
    arcs = solver.add_arcs_with_capacity_and_unit_cost(starts, ends, caps, costs)
    supplies = np.concatenate([np.ones(n_batches, np.int64), np.zeros(n_classes, np.int64), [-n_batches]])
    solver.set_nodes_supplies(np.arange(supplies.size), supplies)
    if solver.solve() != solver.OPTIMAL:
        raise RuntimeError("room allocation flow has no optimal solution")
    flows = solver.flows(arcs)[: b.size]
    chosen = np.full(n_batches, -1, dtype=np.int64)
    picked = flows > 0
    batch_class = np.full(n_batches, -1, dtype=np.int64)
    batch_class[b[picked]] = c[picked]
    # concrete rooms: within a class, batches in index order take rooms in room order
    rooms_by_class = [np.flatnonzero(room_class == k) for k in range(class_capacity.size)]
    for k in range(n_classes):
        members = np.flatnonzero(batch_class == k)
        if not members.size:
            continue
        rooms = rooms_by_class[k // n_shifts]
        if free_slots is not None:
            rooms = rooms[free_slots[rooms, class_shift[k]]]
        rooms = rooms[: members.size]
        chosen[members] = rooms * n_shifts + class_shift[k]
    return chosen
