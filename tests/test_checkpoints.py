"""Stage checkpoints (``stage2/checkpoints.py``): a saved result loads back only under the
same key (input digest + the configuration that shapes batches), written atomically.

Found and pinned here: a truncated, empty or garbage checkpoint file is treated as missing
(``load`` returns ``None``, so the stage is recomputed). Three defects are recorded as strict
xfails: content altered after writing (bit rot) loads silently; a checkpoint that unpickles
to something else raises a bare ``AttributeError``; a failed save leaves its temporary file.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from stage2.checkpoints import CHECKPOINT_DIR, NON_SEMANTIC_KEYS, CheckpointStore, checkpoint_key

DIGEST = "d" * 64
CONFIG = {
    "data": {"input_dir": "/srv/in"}, "seed": 0, "batch_size": {"min": 15, "target": 35, "max": 60},
    "algorithm": {"name": "balanced"}, "tracking": {"enabled": False}, "report": {"notebook": False},
    "resume": False, "dry_run": False, "output_dir": None, "parallel": {"backend": "loky", "n_workers": -1},
}


@dataclass
class Result:
    """Stands for a stage result: arrays inside a dataclass, like ``Clustering``."""

    labels: np.ndarray
    groups: list[str]


def result() -> Result:
    return Result(labels=np.arange(40, dtype=np.int64) % 7, groups=["P-CSE", "P-ME"])


def files(store: CheckpointStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir())


def test_save_and_load_round_trip(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    path = store.save("clustering", result())
    assert path == tmp_path / CHECKPOINT_DIR / "clustering.pkl" and path.is_file()
    loaded = CheckpointStore(tmp_path, "key-1").load("clustering")  # a new store: a resumed run
    assert isinstance(loaded, Result)
    np.testing.assert_array_equal(loaded.labels, result().labels)
    assert loaded.groups == ["P-CSE", "P-ME"]
    assert store.load("allocation") is None  # never saved


def test_a_checkpoint_of_another_key_does_not_load(tmp_path):
    CheckpointStore(tmp_path, "key-1").save("sizing", result())
    assert CheckpointStore(tmp_path, "key-2").load("sizing") is None
    assert CheckpointStore(tmp_path, "key-1").load("sizing") is not None


def test_key_covers_the_input_digest_and_the_configuration_that_shapes_batches():
    key = checkpoint_key(CONFIG, DIGEST)
    assert key == checkpoint_key(dict(reversed(list(CONFIG.items()))), DIGEST)  # key order is irrelevant
    assert checkpoint_key(CONFIG, "e" * 64) != key
    for changed in ({"seed": 1}, {"batch_size": {"min": 15, "target": 30, "max": 60}},
                    {"algorithm": {"name": "kmeans"}}, {"data": {"input_dir": "/srv/other"}}):
        assert checkpoint_key({**CONFIG, **changed}, DIGEST) != key, changed
    # where output goes and how the run is reported do not change the batches
    assert set(NON_SEMANTIC_KEYS) >= {"tracking", "report", "resume", "dry_run", "output_dir", "parallel"}
    for changed in ({"tracking": {"enabled": True}}, {"report": {"notebook": True}}, {"resume": True},
                    {"dry_run": True}, {"output_dir": "/tmp/x"}, {"parallel": {"backend": "dask", "n_workers": 2}}):
        assert checkpoint_key({**CONFIG, **changed}, DIGEST) == key, changed


def test_saving_again_replaces_the_checkpoint_and_leaves_no_temporary_file(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    store.save("sizing", {"plan": 1})
    store.save("clustering", result())
    store.save("sizing", {"plan": 2})
    assert files(store) == ["clustering.pkl", "sizing.pkl"]
    assert store.load("sizing") == {"plan": 2}


def test_clear_removes_the_checkpoints(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    for stage in ("sizing", "clustering", "allocation"):
        store.save(stage, stage)
    store.clear()
    assert files(store) == [] and store.load("sizing") is None


def test_a_truncated_checkpoint_is_treated_as_missing_at_every_length(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    path = store.save("clustering", result())
    whole = path.read_bytes()
    for length in range(len(whole)):  # 0 bytes (created, never written) up to one byte short
        path.write_bytes(whole[:length])
        assert store.load("clustering") is None, f"truncated to {length} of {len(whole)} bytes"
    path.write_bytes(whole)
    assert store.load("clustering") is not None


@pytest.mark.parametrize("content", [b"garbage, not a pickle", b"\x80\x05\x95garbage", b"\x00" * 64],
                         ids=["text", "bad-pickle-frame", "zeros"])
def test_a_garbage_checkpoint_is_treated_as_missing(tmp_path, content):
    store = CheckpointStore(tmp_path, "key-1")
    store.save("allocation", result()).write_bytes(content)
    assert store.load("allocation") is None


def test_a_checkpoint_altered_after_writing_is_not_loaded_silently(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    saved = result()
    path = store.save("clustering", saved)
    raw = bytearray(path.read_bytes())
    start = bytes(raw).find(saved.labels.tobytes())
    assert start > 0  # the array's bytes are stored as they are
    raw[start] = (raw[start] + 1) % 7  # one student's label 0 -> 1: still a valid-looking label
    path.write_bytes(bytes(raw))
    try:
        loaded = store.load("clustering")
    except Exception as exc:  # a clear error would do as well as "missing"
        assert "checkpoint" in str(exc).lower()
        return
    assert loaded is None, f"altered checkpoint loaded: labels[0] = {loaded.labels[0]} (saved {saved.labels[0]})"


def test_a_checkpoint_that_is_not_a_store_record_is_treated_as_missing(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    store.save("sizing", result()).write_bytes(pickle.dumps(["not", "a", "record"]))
    assert store.load("sizing") is None


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    store.save("sizing", {"plan": 1})
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        store.save("sizing", {"plan": lambda: 2})  # cannot be pickled: fails while writing
    assert store.load("sizing") == {"plan": 1}


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    store = CheckpointStore(tmp_path, "key-1")
    store.save("sizing", {"plan": 1})
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        store.save("sizing", {"plan": lambda: 2})
    store.clear()
    assert [name for name in files(store) if not name.endswith(".pkl")] == []
