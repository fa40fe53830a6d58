"""The service's OpenAPI schema, committed as ``stage2/service/openapi.json`` (a test fails when
the app's schema and the committed one differ). Regenerate after changing the API::

    python -m stage2.service.openapi > stage2/service/openapi.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from stage2.config.service import ServiceConfig

SCHEMA_FILE = Path(__file__).with_name("openapi.json")


def current_schema() -> dict[str, Any]:
    """The schema of the app as built now (in a throwaway home: building it creates one)."""
    from stage2.service.app import create_app

    with tempfile.TemporaryDirectory(prefix="stage2-openapi-") as home:
        return create_app(ServiceConfig(home=home)).openapi()


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(current_schema()))
