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
    cap = dict(zip(rooms["room_id"], rooms["capacity"], strict=True))
    slots = [(r, s) for r, s in zip(allocation.room_id, allocation.shift_id, strict=True) if r is not None]
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
    got = [(int(r[1:]), ["M", "A"].index(s)) for r, s in zip(allocation.room_id, allocation.shift_id, strict=True)]
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
        best = sum(score[r, c] for r, c in zip(rows, cols, strict=True) if score[r, c] > 0)
        got = 0.0
        for b, (room, shift) in enumerate(zip(allocation.room_id, allocation.shift_id, strict=True)):
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
    recorded = allocate_rooms(sizes, np.zeros((3, 2), int), rooms, SHIFTS, strict)
    # under strict the shortfall is a problem the stage runner raises with the run's others
    [problem] = recorded.problems
    assert isinstance(problem, InfeasibleError) and not recorded.warnings
    assert problem.code == "INSUFFICIENT_ROOMS" and problem.exit_code == 4 and problem.details == {"shortfall": 1}
    assert not allocation.problems


def test_room_types_filter(settings):
    rooms = pd.DataFrame({"room_id": ["LAB1", "C1"], "capacity": [60, 60], "room_type": ["LAB", "CLASSROOM"]})
    allocation = allocate_rooms(np.array([30, 30]), np.zeros((2, 2), int), rooms, SHIFTS, settings,
                                room_types=["classroom"])
    assert set(allocation.room_id) == {"C1"}


# ------------------------------------------------------------------------------------------
# the hard capacity_limit rule with a threshold below 1: README "Constraint rules" — a batch
# fits a room when size <= threshold × capacity (so it needs capacity >= size / threshold),
# and batch_size.max is capped at threshold × the largest room

def capacity_settings(compose_config, threshold: str, *extra: str):
    return build_settings(compose_config(["data.input_dir=/x", f"constraints.rules.room_capacity.threshold={threshold}",
                                          *extra]))


def fits(size: int, capacity: int, threshold: str) -> bool:
    """size <= threshold × capacity in exact arithmetic (the threshold as written)."""
    from fractions import Fraction

    return Fraction(size) <= Fraction(threshold) * capacity


ONE_SHIFT = pd.DataFrame({"shift_id": ["M"]})


@pytest.mark.parametrize("threshold", ["0.7", "0.8", "0.75"])
def test_capacity_threshold_decides_which_rooms_a_batch_fits(compose_config, threshold):
    settings = capacity_settings(compose_config, threshold)
    capacities = [30, 40, 50, 90]
    rooms = rooms_frame(capacities)
    for size in range(15, 70):
        allocation = allocate_rooms(np.array([size]), np.zeros((1, 1), int), rooms, ONE_SHIFT, settings)
        fitting = [c for c in capacities if fits(size, c, threshold)]
        assert allocation.placed[0] == bool(fitting), (size, threshold)
        if fitting:
            assert fits(size, int(allocation.capacity[0]), threshold), (size, allocation.room_id)
            # seat use prefers the smallest room that fits
            assert allocation.capacity[0] == min(fitting)


def test_capacity_threshold_boundaries_are_exact(compose_config):
    """0.7 × 90 is 62.99999999999999 in floating point: 63 students still fit (63 / 0.7 = 90)."""
    settings = capacity_settings(compose_config, "0.7")
    rooms = rooms_frame([90])
    placed = allocate_rooms(np.array([63]), np.zeros((1, 1), int), rooms, ONE_SHIFT, settings)
    assert placed.placed.all() and placed.room_id == ["R0"]
    too_big = allocate_rooms(np.array([64]), np.zeros((1, 1), int), rooms, ONE_SHIFT, settings)
    assert not too_big.placed.any()
    assert "largest usable capacity 63" in too_big.warnings[0]
    # 32 students need 40 seats at 0.8: a 39-seat room is refused, a 40-seat room accepted
    at_080 = capacity_settings(compose_config, "0.8")
    assert not allocate_rooms(np.array([32]), np.zeros((1, 1), int), rooms_frame([39]), ONE_SHIFT, at_080).placed.any()
    assert allocate_rooms(np.array([32]), np.zeros((1, 1), int), rooms_frame([40]), ONE_SHIFT, at_080).placed.all()


def test_capacity_threshold_under_strict_fails_with_insufficient_rooms(compose_config):
    strict = capacity_settings(compose_config, "0.5", "strict=true")
    [problem] = allocate_rooms(np.array([26]), np.zeros((1, 2), int), rooms_frame([50]), SHIFTS, strict).problems
    assert problem.code == "INSUFFICIENT_ROOMS" and "largest usable capacity 25" in str(problem)


def brute_force_best(sizes, prefs, capacities, n_shifts, weight, threshold):
    """(most batches placed, best score among those) over every assignment of distinct
    (room, shift) slots or none to the batches, feasible under the threshold."""
    slots = [(r, s) for r in range(len(capacities)) for s in range(n_shifts)]
    best = (-1, -np.inf)
    options = slots + [None] * len(sizes)
    for choice in set(itertools.permutations(options, len(sizes))):
        if any(c is not None and not fits(int(sizes[b]), int(capacities[c[0]]), threshold)
               for b, c in enumerate(choice)):
            continue
        placed = sum(c is not None for c in choice)
        score = sum(weight * prefs[b, c[1]] / sizes[b] + sizes[b] / capacities[c[0]]
                    for b, c in enumerate(choice) if c is not None)
        best = max(best, (placed, score))
    return best


def allocation_value(allocation, sizes, prefs, capacities, shift_ids, weight):
    placed = int(allocation.placed.sum())
    score = sum(weight * prefs[b, shift_ids.index(s)] / sizes[b] + sizes[b] / capacities[int(r[1:])]
                for b, (r, s) in enumerate(zip(allocation.room_id, allocation.shift_id, strict=True)) if r is not None)
    return placed, score


@pytest.mark.parametrize("threshold", ["1.0", "0.8"])
@pytest.mark.parametrize("weight", [0.0, 0.25, 1.0, 3.0])
def test_allocation_is_the_brute_force_optimum_for_any_shift_weight_and_threshold(compose_config, weight, threshold):
    settings = capacity_settings(compose_config, threshold)
    rng = np.random.default_rng(int(weight * 100) + len(threshold))
    for case in range(12):
        n_batches = int(rng.integers(1, 5))
        sizes = rng.integers(15, 50, n_batches)
        prefs = np.stack([rng.multinomial(int(s), rng.dirichlet([1, 1])) for s in sizes])
        capacities = rng.choice([20, 30, 40, 50, 60], size=int(rng.integers(1, 4)))
        rooms = rooms_frame(capacities)
        allocation = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings, shift_preference_weight=weight)
        for b, (room, _) in enumerate(zip(allocation.room_id, allocation.shift_id, strict=True)):
            if room is not None:
                assert fits(int(sizes[b]), int(capacities[int(room[1:])]), threshold)
        got = allocation_value(allocation, sizes, prefs, capacities, ["M", "A"], weight)
        best = brute_force_best(sizes, prefs, capacities, 2, weight, threshold)
        assert got[0] == best[0], f"case {case}: placed {got[0]}, best {best[0]}"
        assert got[1] == pytest.approx(best[1], abs=1e-5), f"case {case}"


def test_shift_preference_weight_trades_preferred_shifts_against_seat_use(settings):
    """Two batches of 30 who all prefer the morning; rooms of 30 and 60 seats.
    Both in the 30-seat room (one in the afternoon) scores w + 2; both in the morning (one in the
    60-seat room) scores 2w + 1.5: the morning wins exactly when w > 0.5."""
    sizes = np.array([30, 30])
    prefs = np.array([[30, 0], [30, 0]])
    rooms = rooms_frame([30, 60])
    for weight in (0.0, 0.25, 0.45):
        allocation = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings, shift_preference_weight=weight)
        assert allocation.room_id == ["R0", "R0"], weight
        assert sorted(allocation.shift_id) == ["A", "M"], weight
    for weight in (0.55, 1.0, 3.0):
        allocation = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings, shift_preference_weight=weight)
        assert allocation.shift_id == ["M", "M"], weight
        assert sorted(allocation.room_id) == ["R0", "R1"], weight


def test_default_shift_preference_weight_is_one(compose_config, settings):
    from stage2.config.schema import to_stage2_config

    assert to_stage2_config(compose_config(["data.input_dir=/x"])).resources.shift_preference_weight == 1.0
    sizes, prefs, rooms = np.array([30, 30]), np.array([[30, 0], [30, 0]]), rooms_frame([30, 60])
    default = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings)
    explicit = allocate_rooms(sizes, prefs, rooms, SHIFTS, settings, shift_preference_weight=1.0)
    assert default.room_id == explicit.room_id and default.shift_id == explicit.shift_id == ["M", "M"]


def test_capacity_threshold_caps_the_batch_size_at_what_the_largest_room_admits(compose_config):
    from stage2.config.settings import SizeBounds
    from stage2.sizing import effective_bounds

    settings = capacity_settings(compose_config, "0.7")
    assert effective_bounds(SizeBounds(15, 35, 80), settings, 100).max == 70
    admitted = allocate_rooms(np.array([63]), np.zeros((1, 1), int), rooms_frame([90]), ONE_SHIFT, settings)
    assert admitted.placed.all()
    assert effective_bounds(SizeBounds(15, 35, 80), settings, 90).max == 63


# ------------------------------------------------------------------------------------------
# resources.allocate_rooms=false: batches without home rooms, outputs otherwise unchanged

def test_allocate_rooms_false_leaves_rooms_and_shifts_empty_and_the_outputs_valid(make_institution_dir,
                                                                                 compose_config, tmp_path):
    from stage2 import process_student_batching

    input_dir = make_institution_dir(200, seed=0, n_groups="one")
    common = [f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false", "report.formats=[]",
              "as_of=2025-08-01T00:00:00"]
    off = process_student_batching(compose_config([*common, "resources.allocate_rooms=false"]),
                                   output_dir=tmp_path / "off")
    on = process_student_batching(compose_config(common), output_dir=tmp_path / "on")

    def read(run: str, table: str) -> pd.DataFrame:
        return pd.read_csv(tmp_path / run / f"{table}.csv", dtype=str, keep_default_na=False)

    batches = read("off", "student_batches")
    for column in ("room_id", "shift_id", "preferred_shift", "capacity_allocated"):
        assert (batches[column] == "").all(), column
    assert (read("off", "batch_course_enrollment")["capacity_utilization"] == "").all()
    assert read("on", "student_batches")["room_id"].ne("").all()  # the same input does get rooms
    # the batches themselves do not depend on rooms: same members, ids and courses
    assert (tmp_path / "off" / "batch_student_membership.csv").read_bytes() == \
        (tmp_path / "on" / "batch_student_membership.csv").read_bytes()
    enrollment_on = read("on", "batch_course_enrollment").drop(columns="capacity_utilization")
    pd.testing.assert_frame_equal(read("off", "batch_course_enrollment").drop(columns="capacity_utilization"),
                                  enrollment_on)
    # still a complete, valid batching
    members = read("off", "batch_student_membership")
    assert members["student_id"].is_unique and len(members) == off.metrics["n_students"]
    counts = members["batch_id"].value_counts()
    sizes = batches.set_index("batch_id")["student_count"].astype(int)
    assert counts.sort_index().tolist() == sizes.sort_index().tolist()
    bounds = batches.set_index("batch_id")[["size_min", "size_max"]].astype(int)
    assert ((sizes >= bounds["size_min"]) & (sizes <= bounds["size_max"])).all()
    assert off.metrics["room_placement_rate"] == 0 and off.metrics["hard_constraint_violations"] == 0
    assert not any("INSUFFICIENT_ROOMS" in w for w in off.warnings)  # no rooms by choice, not a shortage
    assert on.metrics["room_placement_rate"] == 1.0
