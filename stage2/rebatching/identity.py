"""Stable identities in a re-batch: a kept batch keeps its ``batch_code`` (hence its
``batch_id``), home room and shift; new batches get codes after every code the previous run
used (a dissolved batch's code is never reused: Stage 3 may have timetabled it)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from stage2.allocation import Allocation, allocate_rooms, capacity_threshold
from stage2.config.settings import BatchingSettings, seats_admitted
from stage2.contract.csvio import string_positions
from stage2.membership import batch_codes
from stage2.rebatching.previous import PreviousRun
from stage2.sizing import BatchPlan

_NUMBERED = re.compile(r"^(?P<prefix>.*)-B(?P<number>\d+)$")


def rebatch_codes(plan: BatchPlan, batch_group: np.ndarray, previous_row: np.ndarray,
                  previous: PreviousRun) -> list[str]:
    """Per batch: the previous code of a kept batch; for a new one ``<prefix>-B<nn>`` with the
    prefix of its group's kept batches (else the fresh prefix) and the next number no previous
    code with that prefix used."""
    old_codes = previous.batches["batch_code"].astype(str).tolist()
    fresh = batch_codes(plan, batch_group)
    last: dict[str, int] = {}
    for code in old_codes:
        if match := _NUMBERED.match(code):
            last[match["prefix"]] = max(last.get(match["prefix"], 0), int(match["number"]))
    group_prefix: dict[int, str] = {}
    for kept in np.flatnonzero(previous_row >= 0):
        match = _NUMBERED.match(old_codes[previous_row[kept]])
        if match:
            group_prefix.setdefault(int(batch_group[kept]), match["prefix"])
    used = set(old_codes)
    codes: list[str] = []
    for b, group in enumerate(int(g) for g in batch_group):
        if previous_row[b] >= 0:
            codes.append(old_codes[previous_row[b]])
            continue
        prefix = group_prefix.get(group) or fresh[b].rsplit("-B", 1)[0]
        number: int = last.get(prefix, 0) + 1
        while f"{prefix}-B{number:02d}" in used:
            number += 1
        last[prefix] = number
        code = f"{prefix}-B{number:02d}"
        used.add(code)
        codes.append(code)
    return codes


def keep_rooms(
    batch_sizes: np.ndarray,
    previous_row: np.ndarray,
    previous: PreviousRun,
    shift_preferences: np.ndarray,
    rooms: pd.DataFrame,
    shifts: pd.DataFrame,
    settings: BatchingSettings,
    *,
    shift_preference_weight: float,
    batch_labels: list[str],
) -> Allocation:
    """Kept batches keep their (room, shift) when the room is still a home room, the shift
    still exists and the batch still fits; the others (new batches, and kept ones whose room
    closed or became too small) are allocated among the free slots, a kept batch preferring its
    old shift and, there, the smallest room that fits (:func:`~stage2.allocation.allocate_rooms`)."""
    rooms = rooms.sort_values("room_id", kind="stable").reset_index(drop=True)
    room_ids = rooms["room_id"].astype(str)
    shift_ids = shifts["shift_id"].astype(str)
    usable = seats_admitted(rooms["capacity"].to_numpy(dtype=np.int64), capacity_threshold(settings))
    n_batches = int(batch_sizes.size)
    free = np.ones((len(rooms), len(shifts)), dtype=bool)
    kept_room = np.full(n_batches, -1, dtype=np.int64)
    kept_shift = np.full(n_batches, -1, dtype=np.int64)
    old = previous.batches
    old_room = string_positions(old["room_id"].astype("string").fillna(""), room_ids)
    old_shift = string_positions(old["shift_id"].astype("string").fillna(""), shift_ids)
    for b in np.flatnonzero(previous_row >= 0):
        room, shift = old_room[previous_row[b]], old_shift[previous_row[b]]
        kept_shift[b] = shift
        if room >= 0 and shift >= 0 and free[room, shift] and usable[room] >= batch_sizes[b]:
            kept_room[b] = room
            free[room, shift] = False
    to_place = np.flatnonzero(kept_room < 0)
    placed = allocate_rooms(batch_sizes[to_place], shift_preferences[to_place], rooms, shifts, settings,
                            shift_preference_weight=shift_preference_weight,
                            batch_labels=[batch_labels[b] for b in to_place], free_slots=free,
                            keep_shift=kept_shift[to_place])
    room_id: list[str | None] = [None] * n_batches
    shift_id: list[str | None] = [None] * n_batches
    capacity = np.zeros(n_batches, dtype=np.int64)
    capacities = rooms["capacity"].to_numpy(dtype=np.int64)
    for b in np.flatnonzero(kept_room >= 0):
        room_id[b], shift_id[b] = room_ids[kept_room[b]], shift_ids[kept_shift[b]]
        capacity[b] = capacities[kept_room[b]]
    for i, b in enumerate(to_place):
        room_id[b], shift_id[b], capacity[b] = placed.room_id[i], placed.shift_id[i], placed.capacity[i]
    return Allocation(room_id, shift_id, capacity, f"kept {n_batches - to_place.size}, {placed.method} for the rest",
                      placed.warnings, placed.problems)
