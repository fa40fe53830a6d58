"""Stage checkpoints, so an interrupted run can resume (``resume=true``) from its last
completed stage and give the same outputs as an uninterrupted run.

After sizing, clustering and allocation (the stages worth saving; the others are cheap and
deterministic) the stage's result is pickled into ``<run dir>/.checkpoints/<stage>.pkl``,
written to a temporary file and renamed, so a kill never leaves a half-written checkpoint.
Each checkpoint carries a key: the digest of the input and of the configuration that shapes
the result, and a SHA-256 of its own content. A resumed run uses only intact checkpoints whose
key matches; otherwise it recomputes the stage.
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
NON_SEMANTIC_KEYS = ("tracking", "report", "resume", "dry_run", "output_dir", "parallel")


def checkpoint_key(resolved_config: dict[str, Any], input_digest: str) -> str:
    semantic = {k: v for k, v in resolved_config.items() if k not in NON_SEMANTIC_KEYS}
    payload = json.dumps([semantic, input_digest], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class CheckpointStore:
    """Checkpoints of one run directory, valid for one key.

    A file holds the SHA-256 of its payload on the first line, then the pickled payload
    ``{"key", "result"}``: a file altered or cut short after it was written fails the digest
    and is treated as missing (the stage is recomputed), before anything is unpickled."""

    def __init__(self, run_dir: Path, key: str) -> None:
        self.directory = run_dir / CHECKPOINT_DIR
        self.key = key

    def save(self, stage: str, result: Any) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{stage}.pkl"
        tmp = target.with_suffix(".tmp")
        try:
            payload = pickle.dumps({"key": self.key, "result": result}, protocol=pickle.HIGHEST_PROTOCOL)
            with tmp.open("wb") as handle:
                handle.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def load(self, stage: str) -> Any | None:
        """The saved result of ``stage`` if it exists, is intact and matches this run's key."""
        path = self.directory / f"{stage}.pkl"
        try:
            digest, _, payload = path.read_bytes().partition(b"\n")
        except FileNotFoundError:
            return None
        if digest != hashlib.sha256(payload).hexdigest().encode():
            return None
        try:
            saved = pickle.loads(payload)
        except Exception:  # written by another version of stage2 (a class that moved or changed)
            return None
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return None
        return saved.get("result")

    def clear(self) -> None:
        for pattern in ("*.pkl", "*.tmp"):
            for path in self.directory.glob(pattern):
                path.unlink(missing_ok=True)
