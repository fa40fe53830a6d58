"""stage_progress: a Rich display on a terminal, nothing otherwise."""

from __future__ import annotations

from stage2.reporting import stage_progress

STAGES = ["validation", "sizing", "clustering"]


def run_stages(progress):
    for i, name in enumerate(STAGES):
        progress.start(name)
        progress.done(name, 0.5 * i)
    progress.start("outputs")  # a stage not announced is fine
    progress.done("outputs", 0.1)


def test_disabled_prints_nothing(capsys):
    with stage_progress(STAGES, enabled=False) as progress:
        run_stages(progress)
    assert capsys.readouterr() == ("", "")


def test_default_follows_stderr_being_a_terminal(capsys):
    with stage_progress(STAGES) as progress:  # under pytest stderr is captured: not a TTY
        run_stages(progress)
    assert capsys.readouterr() == ("", "")


def test_enabled_reports_each_stage_on_stderr(capsys):
    with stage_progress(STAGES, enabled=True) as progress:
        run_stages(progress)
    out, err = capsys.readouterr()
    assert out == ""
    for name in [*STAGES, "outputs"]:
        assert name in err
    assert "1.00 s" in err
