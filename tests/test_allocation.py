"""Room and shift allocation stage."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from stage2.allocation import allocate_rooms
from stage2.config import build_settings
from stage2.errors import InfeasibleError


@pytest.fixture
def settings(compose_config):
    return build_settings(compose_config(["data.input_dir=/x"]))


def rooms_frame(capacities):
    return pd.DataFrame({"room_id": [f"R{i}" for i in range(len(capacities))], "capacity": capacities,
                         "room_type": "CLASSROOM"})


SHIFTS = pd.DataFrame({"shift_id": ["M", "A"]})


def _check(allocation, sizes, rooms):
    cap = dict(zip(rooms["room_id"], rooms["capacity"]))
    slots = [(r, s) for r, s in zip(allocation.room_id, allocation.shift_id) if r is not None]
    assert len(slots) == len(set(slots))
    for b, r in enumerate(allocation.room_id):
        if r is not None:
            assert cap[r] >= sizes[b] and allocation.capacity[b] == cap[r]


def test_allocation_respects_capacity_and_slots(settings):
    sizes = np.array([50, 40, 35, 30, 20])
    prefs = np.array([[50, 0], [0, 40], [35, 0], [10, 20], [0, 0]])
    rooms = rooms_frame([60, 40, 36])
    allocation = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings)
    _check(allocation, sizes, rooms)
    assert allocation.placed.all()
    assert allocation.shift_id[0] == "M" and allocation.shift_id[1] == "A"


def test_exact_allocation_is_optimal_on_a_small_case(settings):
    rng = np.random.default_rng(0)
    sizes = np.array([30, 25, 20])
    prefs = rng.integers(0, 20, size=(3, 2))
    rooms = rooms_frame([30, 25])
    allocation = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings)
    slots = [(r, s) for r in range(2) for s in range(2)]
    cap = np.array([30, 25])

    def score(choice):
        return sum(prefs[b, s] / sizes[b] + sizes[b] / cap[r] for b, (r, s) in enumerate(choice))

    feasible = [c for c in itertools.permutations(slots, 3) if all(cap[r] >= sizes[b] for b, (r, _) in enumerate(c))]
    best = max(score(c) for c in feasible)
    got = [(int(r[1:]), ["M", "A"].index(s)) for r, s in zip(allocation.room_id, allocation.shift_id)]
    assert score(got) == pytest.approx(best)


def test_flow_allocation_matches_the_hungarian_optimum_on_random_cases(settings):
    """Aggregating equal-capacity rooms loses nothing: the optimum equals a dense assignment."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(7)
    for _ in range(20):
        n_batches = int(rng.integers(3, 12))
        sizes = rng.integers(15, 61, n_batches)
        prefs = np.stack([rng.integers(0, s + 1, 2) for s in sizes])
        prefs = np.minimum(prefs, sizes[:, None])
        rooms = rooms_frame(rng.choice([30, 40, 50, 60], size=int(rng.integers(2, 8))))
        allocation = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings)
        _check(allocation, sizes, rooms)
        cap = rooms["capacity"].to_numpy()
        slots = [(r, s) for r in range(len(cap)) for s in range(2)]
        score = np.full((n_batches, len(slots) + n_batches), 0.0)
        for b in range(n_batches):
            for k, (r, s) in enumerate(slots):
                score[b, k] = 1000 + prefs[b, s] / sizes[b] + sizes[b] / cap[r] if cap[r] >= sizes[b] else -1e9
        rows, cols = linear_sum_assignment(-score)
        best = sum(score[r, c] for r, c in zip(rows, cols) if score[r, c] > 0)
        got = 0.0
        for b, (room, shift) in enumerate(zip(allocation.room_id, allocation.shift_id)):
            if room is not None:
                got += 1000 + prefs[b, ["M", "A"].index(shift)] / sizes[b] + sizes[b] / cap[int(room[1:])]
        assert got == pytest.approx(best, abs=1e-4)


def test_too_few_rooms_reports_unplaced_and_strict_fails(settings, compose_config):
    sizes = np.array([40, 40, 40])
    rooms = rooms_frame([45])
    allocation = allocate_rooms(sizes, np.zeros((3, 2), int), rooms, SHIFTS, settings, batch_labels=["B1", "B2", "B3"])
    assert allocation.placed.sum() == 2
    assert "INSUFFICIENT_ROOMS" in allocation.warnings[0] and "1 of 3 batches" in allocation.warnings[0]
    strict = build_settings(compose_config(["strict=true", "data.input_dir=/x"]))
    with pytest.raises(InfeasibleError) as info:
        allocate_rooms(sizes, np.zeros((3, 2), int), rooms, SHIFTS, strict)
    assert info.value.code == "INSUFFICIENT_ROOMS" and info.value.exit_code == 4


def test_room_types_filter(settings):
    rooms = pd.DataFrame({"room_id": ["LAB1", "C1"], "capacity": [60, 60], "room_type": ["LAB", "CLASSROOM"]})
    allocation = allocate_rooms(np.array([30, 30]), np.zeros((2, 2), int), rooms, SHIFTS, settings, room_types=["classroom"])
    assert set(allocation.room_id) == {"C1"}
