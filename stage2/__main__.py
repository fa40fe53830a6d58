"""``python -m stage2 [overrides]``: the Hydra entrypoint, a thin shell over the pipeline.

Exit status: 0 ok, 1 internal error, 2 configuration, 3 input, 4 infeasible, 130
interrupted (``stage2.errors.EXIT_CODES``). A failed run writes no Stage 3 CSV.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from stage2.config import register_configs, register_resolvers
from stage2.errors import EXIT_CODES, Stage2Error

log = logging.getLogger("stage2")

register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def run(cfg: DictConfig) -> float | None:
    """Run one job; return its academic coherence (the scalar sweepers optimise).

    Errors are turned into a message and an exit status here: Hydra would otherwise print a
    traceback and exit with 1 whatever went wrong.
    """
    from stage2.pipeline import process_student_batching

    try:
        result = process_student_batching(cfg)
    except Stage2Error as exc:
        log.error("%s", exc)
        print(f"stage2: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("stage2: interrupted; no output CSV was written", file=sys.stderr)
        sys.exit(EXIT_CODES["interrupted"])
    return result.metrics.get("academic_coherence")


def main() -> None:
    run()


if __name__ == "__main__":
    main()
