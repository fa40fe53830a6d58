"""``python -m stage2.synth OUT_DIR --students N --seed S``: write a synthetic institution.

Options: ``--groups many|one|large``, ``--profile university|college``, ``--delimiter`` (``,``
``;`` ``|`` or ``tab``), ``--bom``, ``--enrollment-format table|list_column``. Prints each file
written with its rows and size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from stage2.synth.catalog import PROFILES
from stage2.synth.generator import (
    DELIMITERS,
    ENROLLMENT_FORMATS,
    GROUPINGS,
    TABLES,
    make_institution,
    write_institution,
)

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _delimiter(value: str) -> str:
    delimiter = _DELIMITER_NAMES.get(value.lower(), value)
    if delimiter not in DELIMITERS:
        raise argparse.ArgumentTypeError("use ',', ';', '|' or 'tab'")
    return delimiter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stage2.synth",
        description="Generate a deterministic synthetic institution as Stage 2 input CSVs.",
    )
    parser.add_argument("out_dir", help="directory to write <table>.csv into (created)")
    parser.add_argument("--students", type=int, required=True, help="number of students")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--groups", choices=GROUPINGS, default="many",
                        help="'many' programme x semester groups of mostly 40-400 students, 'one' mixable group, "
                             "or 'large': programme x semester groups of ~10k-60k students each (at 1M students)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="university")
    parser.add_argument("--delimiter", type=_delimiter, default=",",
                        help="field delimiter: ',' (default), ';', '|' or 'tab'")
    parser.add_argument("--bom", action="store_true", help="start every file with a UTF-8 BOM")
    parser.add_argument("--enrollment-format", choices=ENROLLMENT_FORMATS, default="table",
                        help="'table': student_course_enrollment.csv; 'list_column': an "
                             "enrolled_courses column in student_data.csv")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.students < 1:
        build_parser().error("--students must be >= 1")
    started = time.perf_counter()
    tables = make_institution(args.students, seed=args.seed, profile=args.profile,
                              n_groups=args.groups)
    generated = time.perf_counter()
    out = write_institution(args.out_dir, tables, delimiter=args.delimiter, bom=args.bom,
                            enrollment_format=args.enrollment_format)
    written = time.perf_counter()

    print(f"wrote {out}/ ({args.profile}, groups={args.groups}, seed={args.seed})")
    for name in TABLES:
        path = out / f"{name}.csv"
        if name not in tables or not path.exists():
            continue
        note = ""
        if name == "student_data" and args.enrollment_format == "list_column":
            note = f"  (enrolled_courses: {len(tables['student_course_enrollment']):,} enrolments)"
        size_mb = path.stat().st_size / 1e6
        print(f"  {path.name:<34} {len(tables[name]):>11,} rows {size_mb:>9.1f} MB{note}")
    print(f"generated in {generated - started:.1f} s, written in {written - generated:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
