"""One error catalogue for stage2.

Every failure the user can cause is a :class:`Stage2Error` subclass carrying

- ``code``: a stable identifier from the design (``BATCH_SIZE_BOUNDS_VIOLATED``, ...) or
  from the input catalogue (``MISSING_COLUMN``, ...);
- ``where``: the file, row, column or group the problem is in;
- ``fix``: what the user should change;
- ``exit_code``: the process exit status of ``python -m stage2`` (see :data:`EXIT_CODES`).

Input validation collects every problem before raising (:class:`InputValidationError` holds a
list of :class:`ValidationIssue`), so a user fixes an export in one pass, not one error per run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Process exit status by failure class. Documented in the README.
EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "internal": 1,
    "configuration": 2,
    "input": 3,
    "infeasible": 4,
    "environment": 5,
    "interrupted": 130,
}

#: Codes of the design document and of the input catalogue, with the fix they call for.
ERROR_CODES: dict[str, str] = {
    # configuration (exit 2)
    "BATCH_SIZE_BOUNDS_VIOLATED": "set 1 <= batch_size.min <= batch_size.target <= batch_size.max",
    "WEIGHT_NORMALIZATION_FAILED": "make weights.homogeneity + weights.balance + weights.size sum to 1",
    "INVALID_CONSTRAINT_RULE": "use a known rule_type and constraint_level, weight in [0, 10], threshold in [0, 1]",
    "INVALID_CONFIGURATION": "correct the configuration key or value named in the message",
    # input (exit 3)
    "MISSING_FILE": "export the named table into the input directory",
    "MISSING_COLUMN": "add the named column to the file's header row",
    "EMPTY_TABLE": "export at least one data row",
    "ENCODING_ERROR": "save the file as UTF-8",
    "PARSE_ERROR": "check the delimiter and quoting of the file",
    "DUPLICATE_KEY": "make the key column unique",
    "BLANK_KEY": "fill in the identifier",
    "DANGLING_REFERENCE": "add the referenced row, or correct the reference",
    "INVALID_ENUM": "use one of the allowed values",
    "INVALID_NUMBER": "use a number within the allowed range",
    "INVALID_BOOLEAN": "use true/false/t/f/1/0/yes/no",
    "INVALID_DATE": "use an ISO date (YYYY-MM-DD)",
    "INVALID_VALUE": "correct the value as the rule says",
    "FEATURE_EXTRACTION_ERROR": "give every active student at least one valid course",
    "PREVIOUS_RUN_INVALID": "point rebatch.previous_run at the output directory of a finished stage2 run",
    "PREVIOUS_RUN_TENANT": "re-batch against a previous run of the same tenant (or set +institution accordingly)",
    "LATER_TERM_ENROLLMENT": "export only enrollments up to each student's current academic_year/semester, or "
                             "correct the student's term in student_data.csv",
    "PREREQUISITE_CYCLE": "remove one prerequisite row of the named cycle from course_prerequisites.csv",
    "PREREQUISITE_NOT_MET": "export the students' earlier terms (their history), drop the named enrollments, or "
                            "set enrollment.prerequisites=report or exclude",
    # infeasible (exit 4)
    "INSUFFICIENT_ROOMS": "add rooms or shifts, or allow unplaced batches (strict=false)",
    "CONSTRAINT_VIOLATION": "relax the hard rule or the size bounds for the named group",
    "CONVERGENCE_FAILURE": "raise the iteration limit or change the algorithm",
    "INSUFFICIENT_FACULTY": "add faculty for the named courses",
    "SCHEDULING_CONFLICT": "resolve the conflicting assignments",
    "STRICT_CHECKS_FAILED": "fix each problem listed (errors.json: error.details.issues), or run with strict=false "
                            "to publish the batches with these problems as warnings",
    # environment (exit 5): something outside stage2 and its input is down or unreachable
    "PARALLEL_BACKEND_UNAVAILABLE": "start the Dask scheduler named by parallel.address (or unset it for a local "
                                    "cluster), or use parallel.backend=loky",
    "PARALLEL_WORKERS_LOST": "the Dask cluster has no workers left: start workers for the scheduler, "
                             "or use parallel.backend=loky",
    "TRACKING_UNAVAILABLE": "start the MLflow server or correct tracking.uri (a SQLite store's directory must be "
                            "writable; move a damaged store file aside), or run untracked with "
                            "tracking.on_unavailable=warn or tracking.enabled=false",
    "OUTPUT_NOT_WRITABLE": "choose an output directory you can write to (output_dir=... or hydra.run.dir=...), "
                           "or free space on its file system",
    # reporting (the audit notebook on a finished run)
    "AUDIT_FAILED": "open the partially executed notebook named in the message; if an integrity check "
                    "failed, the run's files were changed after the run (rerun stage2) or stage2 has a bug (report it)",
}


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in the input, located as precisely as the check allows.

    ``row`` is the 1-based line number in the file with the header on line 1 (so the first
    data row is row 2), or ``None`` for file- or column-level problems.
    """

    code: str
    file: str
    message: str
    row: int | None = None
    column: str | None = None
    value: Any = None

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        value = "" if self.value is None else f" (value {_short(self.value)!r})"
        return f"[{self.code}] {where}: {self.message}{value}"

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["value"] = None if self.value is None else _short(self.value)
        return record


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Stage2Error(Exception):
    """Base class: a failure with a code, a location and a fix."""

    exit_code: int = EXIT_CODES["internal"]
    default_code: str = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        where: str | None = None,
        fix: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.where = where
        self.fix = fix if fix is not None else ERROR_CODES.get(self.code)
        self.details = details or {}
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"[{self.code}]"
        if self.where:
            text += f" {self.where}:"
        text += f" {self.message}"
        if self.fix:
            text += f" Fix: {self.fix}."
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # a strict problem is pickled with its stage's checkpoint: keep code, where, fix, details
        return (_restored_error, (type(self), dict(self.__dict__)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "where": self.where,
            "message": self.message,
            "fix": self.fix,
            "exit_code": self.exit_code,
            "details": self.details,
        }


def _restored_error(cls: type[Stage2Error], state: dict[str, Any]) -> Stage2Error:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, str(error))
    return error


class ConfigurationError(Stage2Error):
    """The configuration (YAML, overrides or EAV parameters) is invalid."""

    exit_code = EXIT_CODES["configuration"]
    default_code = "INVALID_CONFIGURATION"


class InputValidationError(Stage2Error):
    """The input directory breaks the data contract; ``issues`` lists every problem found."""

    exit_code = EXIT_CODES["input"]
    default_code = "INPUT_VALIDATION_FAILED"

    def __init__(self, issues: list[ValidationIssue], *, input_dir: str | None = None) -> None:
        self.issues = list(issues)
        codes = sorted({issue.code for issue in self.issues})
        shown = "\n".join(f"  - {issue}" for issue in self.issues[:50])
        more = len(self.issues) - 50
        if more > 0:
            shown += f"\n  ... and {more} more (see errors.json)"
        message = f"{len(self.issues)} problem(s) in the input ({', '.join(codes)}):\n{shown}\n"
        super().__init__(
            message,
            code=codes[0] if len(codes) == 1 else "INPUT_VALIDATION_FAILED",
            where=input_dir,
            fix="correct the rows named above and run again",
            details={"issues": [issue.to_dict() for issue in self.issues]},
        )


class InfeasibleError(Stage2Error):
    """The input and configuration are valid but admit no solution that keeps the hard rules."""

    exit_code = EXIT_CODES["infeasible"]
    default_code = "CONSTRAINT_VIOLATION"


class EnvironmentFault(Stage2Error):
    """A service stage2 depends on (a Dask cluster, ...) is down or unreachable: not a bug in
    stage2, not a problem of the input."""

    exit_code = EXIT_CODES["environment"]
    default_code = "PARALLEL_BACKEND_UNAVAILABLE"


class InvariantViolation(Stage2Error):
    """An output broke a contract invariant: a bug in stage2, never written to disk."""

    exit_code = EXIT_CODES["internal"]
    default_code = "CONSTRAINT_VIOLATION"


#: Which failure class wins when one run fails for several reasons at once (``strict=true``
#: collects every problem of the plan, the allocation and the checks before failing): the
#: combined error exits with the status of its problem whose class comes first here. Earlier
#: gates first: a bug, then the environment, the configuration, the input, and last a plan the
#: resources cannot carry, which may change once the input is corrected.
SEVERITY_ORDER: tuple[str, ...] = ("internal", "environment", "configuration", "input", "infeasible")


def severity_rank(error: Stage2Error) -> int:
    """Position of ``error``'s exit class in :data:`SEVERITY_ORDER` (0 is the most severe)."""
    classes = [name for name, status in EXIT_CODES.items() if status == error.exit_code]
    ranks = [SEVERITY_ORDER.index(name) for name in classes if name in SEVERITY_ORDER]
    return min(ranks, default=0)  # an exit status outside the order: as severe as a bug


class StrictProblems(Stage2Error):
    """Several problems of one ``strict=true`` run, reported at once (``problems`` in the order
    the stages found them). Code: theirs when they share one, else ``STRICT_CHECKS_FAILED``;
    exit status: the most severe problem's (:data:`SEVERITY_ORDER`). ``details["issues"]``
    lists every problem with its code (each input issue of an :class:`InputValidationError`
    separately); ``details["not_run"]`` the stages that could not run after one failed."""

    exit_code = EXIT_CODES["infeasible"]
    default_code = "STRICT_CHECKS_FAILED"

    def __init__(self, problems: list[Stage2Error], *, not_run: tuple[str, ...] = (), failed_stage: str | None = None
                 ) -> None:
        self.problems = list(problems)
        self.not_run = tuple(not_run)
        self.exit_code = min(self.problems, key=severity_rank).exit_code
        codes = list(dict.fromkeys(problem.code for problem in self.problems))
        shown = "\n".join(f"  - {problem}" for problem in self.problems[:50])
        more = len(self.problems) - 50
        if more > 0:
            shown += f"\n  ... and {more} more (see errors.json)"
        message = f"{len(self.problems)} problem(s) under strict=true ({', '.join(codes)}):\n{shown}\n"
        if self.not_run:
            message += (f"  not checked: stage(s) {', '.join(self.not_run)} could not run after stage {failed_stage} "
                        f"failed\n")
        issues: list[dict[str, Any]] = []
        for problem in self.problems:
            if isinstance(problem, InputValidationError):
                issues += [issue.to_dict() for issue in problem.issues]
            else:
                issues.append(problem.to_dict())
        super().__init__(message, code=codes[0] if len(codes) == 1 else None,
                         fix=ERROR_CODES[self.default_code],
                         details={"issues": issues, "not_run": list(self.not_run), "failed_stage": failed_stage})


def strict_failure(problems: list[Stage2Error], *, not_run: tuple[str, ...] = (),
                   failed_stage: str | None = None) -> Stage2Error:
    """The one error a run with these problems fails with: a single problem as itself (its
    class, code, exit status and details unchanged), several as :class:`StrictProblems`."""
    if len(problems) == 1 and not not_run:
        return problems[0]
    return StrictProblems(problems, not_run=not_run, failed_stage=failed_stage)
