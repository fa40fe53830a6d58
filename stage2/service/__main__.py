"""``python -m stage2.service [service.KEY=VALUE ...]``: serve the REST API with uvicorn.

A thin Hydra shell: the configuration (``conf/service.yaml`` over
:class:`~stage2.config.service.ServiceConfig`) is composed, checked, and handed to
:func:`stage2.service.app.create_app`. One web process: the runs execute as processes of
their own, so uvicorn workers would add nothing but shared-state trouble.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from stage2.config.service import ServiceConfig, register_service_configs
from stage2.locations import config_dir
from stage2.service.security import is_loopback

register_service_configs()


def check_config(config: ServiceConfig) -> None:
    """Exit 2 with a message for a configuration the service must not start with."""
    problems = []
    if config.api_keys_file is None and not is_loopback(config.host):
        problems.append(f"service.host={config.host} without service.api_keys_file: without API keys the service "
                        "listens on loopback only (127.0.0.1)")
    if config.max_concurrent < 1 or config.max_queued < 0 or config.max_upload_mb < 1:
        problems.append("service.max_concurrent and service.max_upload_mb must be >= 1, service.max_queued >= 0")
    if problems:
        for problem in problems:
            print(f"stage2.service: error: [INVALID_CONFIGURATION] {problem}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="service")
def main(cfg: DictConfig) -> None:
    import uvicorn

    from stage2.service.app import create_app

    config: ServiceConfig = OmegaConf.to_object(cfg.service)  # type: ignore[assignment]
    check_config(config)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(config)
    except (OSError, ValueError) as exc:  # an unreadable or malformed keys file, an unusable home
        print(f"stage2.service: error: [INVALID_CONFIGURATION] {exc}", file=sys.stderr)
        sys.exit(2)
    uvicorn.run(app, host=config.host, port=config.port, workers=1, log_level=config.log_level,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
