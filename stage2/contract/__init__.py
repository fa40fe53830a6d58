"""The data contract: reading and validating the input directory, and the output schemas."""

from stage2.contract.csvio import parse_list_cell, read_table
from stage2.contract.institution import InstitutionData
from stage2.contract.loader import load_institution
from stage2.contract.schemas import (
    BATCH_COURSE_ENROLLMENT_COLUMNS,
    MEMBERSHIP_COLUMNS,
    STUDENT_BATCHES_COLUMNS,
    validate_output_tables,
)

__all__ = [
    "BATCH_COURSE_ENROLLMENT_COLUMNS",
    "MEMBERSHIP_COLUMNS",
    "STUDENT_BATCHES_COLUMNS",
    "InstitutionData",
    "load_institution",
    "parse_list_cell",
    "read_table",
    "validate_output_tables",
]
