"""What a run leaves for people to read: the audit notebook (executed and exported to HTML),
the quality report in several formats, and a progress display of the stages.

Wiring (see each function's docstring)::

    from stage2.reporting import run_audit_notebook, stage_progress, write_reports

    with stage_progress(stage_names) as progress:     # Rich display on a terminal, else no-op
        progress.start("validation"); ...; progress.done("validation", seconds)
    write_reports(run_dir, ["console", "txt", "html", "csv"])   # -> [report.txt, report.html, metrics.csv]
    run_audit_notebook(run_dir, timeout_s=600, mlflow_run_id=run_id)  # -> (audit_report.ipynb, audit_report.html)
"""

from stage2.reporting.notebook import AuditFailed, run_audit_notebook
from stage2.reporting.progress import stage_progress
from stage2.reporting.reports import REPORT_FORMATS, write_reports

__all__ = ["REPORT_FORMATS", "AuditFailed", "run_audit_notebook", "stage_progress", "write_reports"]
