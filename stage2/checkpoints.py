"""Stage checkpoints, so an interrupted run can resume (``resume=true``) from its last
completed stage and give the same outputs as an uninterrupted run.

After sizing, clustering and allocation (the stages worth saving; the others are cheap and
deterministic) the stage's result is pickled into ``<run dir>/.checkpoints/<stage>.pkl``,
written to a temporary file and renamed, so a kill never leaves a half-written checkpoint.
Each checkpoint carries a key: the digest of the input and of the configuration that shapes
the result. A resumed run uses only checkpoints whose key matches; otherwise it starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = ".checkpoints"
#: stages whose results are saved, in pipeline order
CHECKPOINTED_STAGES = ("sizing", "clustering", "allocation")
#: configuration keys that do not change the batches (where output goes, how it is reported)
NON_SEMANTIC_KEYS = ("tracking", "report", "resume", "dry_run", "output_dir", "n_jobs")


def checkpoint_key(resolved_config: dict[str, Any], input_digest: str) -> str:
    semantic = {k: v for k, v in resolved_config.items() if k not in NON_SEMANTIC_KEYS}
    payload = json.dumps([semantic, input_digest], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class CheckpointStore:
    def __init__(self, run_dir: Path, key: str) -> None:
        self.directory = run_dir / CHECKPOINT_DIR
        self.key = key

    def save(self, stage: str, result: Any) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{stage}.pkl"
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump({"key": self.key, "result": result}, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        return target

    def load(self, stage: str) -> Any | None:
        """The saved result of ``stage`` if it exists and matches this run's key."""
        path = self.directory / f"{stage}.pkl"
        if not path.exists():
            return None
        try:
            with path.open("rb") as handle:
                saved = pickle.load(handle)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None
        return saved["result"] if saved.get("key") == self.key else None

    def clear(self) -> None:
        for path in self.directory.glob("*.pkl"):
            path.unlink(missing_ok=True)
