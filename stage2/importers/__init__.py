"""Importers: other formats into the Stage 2 input contract.

- :mod:`stage2.importers.itc2019`: ITC 2019 / UniTime course-timetabling problems (XML);
  ``python -m stage2.importers.itc2019 FILE OUT_DIR``.

>>> from stage2.importers import import_itc2019, read_itc2019
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["import_itc2019", "read_itc2019"]

if TYPE_CHECKING:
    from stage2.importers.itc2019 import import_itc2019, read_itc2019


def __getattr__(name: str) -> Any:
    # imported on first use, so that ``python -m stage2.importers.itc2019`` does not find the
    # module already imported by its package (runpy's RuntimeWarning)
    if name in __all__:
        from stage2.importers import itc2019

        return getattr(itc2019, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
