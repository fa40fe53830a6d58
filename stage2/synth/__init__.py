"""Synthetic institutions in the Stage 2 input contract (``make_blobs`` for a university).

>>> tables = make_institution(3000, seed=0)          # dict: table name -> DataFrame
>>> write_institution("demo_input", tables)          # demo_input/<table>.csv

``python -m stage2.synth OUT_DIR --students N --seed S`` does both from the command line.

Identifiers (readable, deterministic): students ``S000001`` (at least 6 digits), programmes
``PRG-CSE`` (further campuses ``PRG-CSE-C02``), departments ``DEPT-CSE``, courses
``CSE-S3-CORE-1`` / ``-LAB-1`` / ``-SEC-1`` / ``-VAC-1`` / ``CSE-S5-ELE-AI-1``, rooms ``R101``
(building b>0: ``R<b>101``), shifts ``SH-MOR``/``SH-AFT``/``SH-EVE`` with codes
``MORNING``/``AFTERNOON``/``EVENING``, parameters ``DP-001``..``DP-005``, overrides
``EPV-001``..``EPV-003``. ``student_data`` also carries ``gender`` and ``cgpa``.
The rates and name lists live in :mod:`stage2.synth.catalog`.
"""

from stage2.synth.generator import TABLES, make_institution, write_institution

__all__ = ["TABLES", "make_institution", "write_institution"]
