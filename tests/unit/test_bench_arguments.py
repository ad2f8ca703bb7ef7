"""`python -m bench`'s arguments: sizes that cannot be run, folders that cannot be written and
a `--code` that names no commit are refused with one line before anything starts (a full
run takes up to an hour, and its results are written at the end), never with a stack
trace; a commit without the bench's code fails the run with git's reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        run.parse(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--referrals", "0"], "--referrals must be 1 or more"),
        (["--referrals", "-5"], "--referrals must be 1 or more"),
        (["--soak-events", "0"], "--soak-events must be 1 or more"),
        (["--audit-entries", "-1"], "--audit-entries must be 1 or more"),
        (["--partitions", "0"], "--partitions must be 1 or more"),
        (["--latency-repeats", "0"], "--latency-repeats must be 1 or more"),
        (["--hub-processes", "0"], "--hub-processes must be 1 or more"),
        (["--latency-seconds", "0"], "--latency-seconds must be a number of seconds above 0"),
        (["--latency-seconds", "nan"], "--latency-seconds must be a number of seconds above 0"),
        (["--latency-seconds", "inf"], "--latency-seconds must be a number of seconds above 0"),
        (["--rates", "500,x"], "--rates takes whole events/s separated by commas, not 'x'"),
        (["--phases", "soak,nap"], "unknown phase(s) nap; choose from"),
    ],
)
def test_sizes_that_cannot_run_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = refused([*argv, "--out", str(tmp_path)], capsys)
    assert line.startswith("python -m bench: error: ")
    assert message in line


def test_a_file_where_a_folder_should_be_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    taken = tmp_path / "results"
    taken.write_text("not a folder")
    for flag in ("--out", "--log-dir"):
        line = refused([flag, str(taken)], capsys)
        assert f"{flag} {taken}: cannot write there (not a folder)" in line
    assert taken.read_text() == "not a folder"


def test_a_folder_that_cannot_be_made_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    line = refused(["--log-dir", str(blocked / "logs")], capsys)
    assert f"--log-dir {blocked / 'logs'}: cannot write there (" in line


def test_missing_folders_are_made_and_sizes_kept(tmp_path: Path) -> None:
    out, logs = tmp_path / "a" / "results", tmp_path / "b" / "logs"
    args, sizes = run.parse(
        ["--smoke", "--referrals", "7", "--latency-seconds", "0.5", "--out", str(out)]
        + ["--log-dir", str(logs)]
    )
    assert out.is_dir() and logs.is_dir()
    assert list(out.iterdir()) == [] and list(logs.iterdir()) == []
    assert (sizes.referrals, sizes.latency_seconds) == (7, 0.5)
    assert sizes.soak_events == run.SMOKE.soak_events
    assert args.out == out


@pytest.mark.parametrize("revision", ["no-such-revision", "-p", "HEAD:bench"])
def test_code_that_names_no_commit_is_refused(
    revision: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = refused([f"--code={revision}", "--out", str(tmp_path)], capsys)
    assert f"--code {revision}: not a commit of this repository" in line


def test_code_of_a_commit_is_taken(tmp_path: Path) -> None:
    args, _ = run.parse(["--code", "HEAD", "--out", str(tmp_path)])
    assert args.code == "HEAD"
    copied = run.snapshot(tmp_path, "HEAD")
    assert (copied / "bench" / "run.py").is_file()


def test_a_commit_without_the_code_fails_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for a commit from before bench/ existed: git archive's own reason, no stack trace."""
    monkeypatch.setattr(run.report, "CODE", (*run.report.CODE, "no-such-folder"))
    with pytest.raises(run.BenchError, match=r"--code HEAD: git archive of .* failed \(.*no-such"):
        run.snapshot(tmp_path, "HEAD")
