"""Execute the audit notebook on a finished run and export it as an HTML report.

``run_audit_notebook(run_dir)`` runs ``notebooks/audit_report.ipynb`` with papermill in the
run directory, writes the executed notebook to ``<run_dir>/audit_report.ipynb`` and exports
``<run_dir>/audit_report.html`` without the code (the HTML reads as a report). The notebook
re-checks the data contract from the run's files, so a tampered run fails here with
:class:`AuditFailed` naming what broke.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stage2.errors import EXIT_CODES, Stage2Error
from stage2.locations import notebooks_dir

log = logging.getLogger("stage2")

#: the template notebook (``notebooks/`` at the repository root, or inside an installed wheel)
TEMPLATE = notebooks_dir() / "audit_report.ipynb"
EXECUTED_NOTEBOOK = "audit_report.ipynb"
HTML_REPORT = "audit_report.html"
KERNEL_NAME = "python3"
#: seconds the kernel may take to start
START_TIMEOUT_S = 120
#: files a run directory must hold before the notebook is worth starting
REQUIRED_FILES = ("quality_report.json", "student_batches.csv", "batch_student_membership.csv",
                  "batch_course_enrollment.csv", "batch_quality.csv")


class AuditFailed(Stage2Error):
    """The audit notebook failed on a run: a broken invariant, an unreadable file, a timeout.

    ``details`` holds ``cell_index``, ``section``, ``ename``, ``evalue`` (when a cell raised)
    and ``notebook`` (the partially executed notebook).
    """

    exit_code = EXIT_CODES["internal"]
    default_code = "AUDIT_FAILED"


def run_audit_notebook(
    run_dir: Path,
    *,
    timeout_s: int = 600,
    mlflow_run_id: str | None = None,
) -> tuple[Path, Path]:
    """Execute the audit notebook on ``run_dir``; return ``(executed .ipynb, .html)``.

    ``timeout_s``: seconds any one cell may run. ``mlflow_run_id``: shown in the report's
    heading (default: the ``run_id`` of ``quality_report.json``).

    Raises :class:`AuditFailed` (code ``AUDIT_FAILED``) naming the failing cell's section and
    error, and where the partially executed notebook is.
    """
    import papermill as pm

    run_dir = Path(run_dir).resolve()
    output = run_dir / EXECUTED_NOTEBOOK
    html_path = run_dir / HTML_REPORT
    html_path.unlink(missing_ok=True)  # never leave a report of an earlier audit beside a failed one
    if not run_dir.is_dir():
        raise AuditFailed(f"run directory {run_dir} does not exist", where=str(run_dir))
    missing = [f for f in REQUIRED_FILES if not (run_dir / f).is_file()]
    if missing:
        raise AuditFailed(f"the run directory lacks {', '.join(missing)}: not a finished stage2 run",
                          where=str(run_dir), details={"missing": missing})
    if not TEMPLATE.is_file():
        raise AuditFailed(f"the audit notebook template {TEMPLATE} is missing (reinstall stage2: a wheel carries "
                          "it inside the package, a checkout in notebooks/)", where=str(TEMPLATE))

    log.info("audit notebook: executing %s on %s", TEMPLATE.name, run_dir)
    try:
        pm.execute_notebook(
            str(TEMPLATE),
            str(output),
            parameters={"run_dir": str(run_dir), "mlflow_run_id": mlflow_run_id or ""},
            kernel_name=KERNEL_NAME,
            cwd=str(run_dir),
            log_output=False,
            progress_bar=False,
            execution_timeout=timeout_s,
            start_timeout=START_TIMEOUT_S,
            # the kernel's own log (e.g. ipykernel's "running over TCP" notice) is noise on
            # the pipeline's stderr; what the cells print or raise is in the notebook
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except pm.PapermillExecutionError as exc:
        section = _section_of(output, exc.cell_index)
        where = f"cell {exc.cell_index}" + (f" ({section})" if section else "")
        raise AuditFailed(
            f"the audit notebook failed in {where}: {exc.ename}: {str(exc.evalue).strip()}\n"
            f"The partially executed notebook is {output}.",
            where=str(run_dir),
            details={"cell_index": exc.cell_index, "section": section, "ename": exc.ename,
                     "evalue": exc.evalue, "notebook": str(output)},
        ) from exc
    except Exception as exc:  # timeouts, a dead or missing kernel, unwritable directory
        raise AuditFailed(
            f"the audit notebook could not run: {type(exc).__name__}: {exc}\n"
            f"The partially executed notebook (if any) is {output}.",
            where=str(run_dir),
            details={"ename": type(exc).__name__, "evalue": str(exc), "notebook": str(output)},
        ) from exc

    try:
        export_html(output, html_path, title=f"stage2 audit — {run_dir.name}")
    except Exception as exc:
        raise AuditFailed(f"the executed notebook {output} could not be exported to HTML: "
                          f"{type(exc).__name__}: {exc}", where=str(run_dir)) from exc
    log.info("audit notebook: %s, %s", output, html_path)
    return output, html_path


def export_html(notebook: Path, target: Path, *, title: str | None = None) -> Path:
    """Export an executed notebook to HTML with its code cells and prompts hidden."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
        extra_loaders=[DictLoader({"stage2_audit.html.j2": _TEMPLATE})], template_file="stage2_audit.html.j2",
    )
    body, _ = exporter.from_notebook_node(
        nbformat.read(str(notebook), as_version=4),
        resources={"metadata": {"name": title or Path(notebook).stem}},
    )
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(target)
    return target


#: nbconvert's lab template without its scripts (require.js, MathJax, Mermaid from CDNs): the
#: report needs none of them, and opening it then fetches nothing from the network
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _section_of(notebook: Path, cell_index: int) -> str:
    """The heading of the markdown cell above ``cell_index`` in ``notebook`` ("" if none)."""
    try:
        import nbformat

        cells = nbformat.read(str(notebook), as_version=4).cells
    except Exception:  # noqa: BLE001 - only a nicer message is lost
        return ""
    for cell in reversed(cells[: cell_index + 1]):
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return "section '" + line.lstrip("#").strip() + "'"
    return ""


__all__ = ["AuditFailed", "HTML_REPORT", "EXECUTED_NOTEBOOK", "TEMPLATE", "export_html", "run_audit_notebook"]
