"""`python3 dev.py ...` on a machine whose Python cannot make a virtualenv with pip (Debian
and Ubuntu ship ensurepip apart, in python3-venv): one line that says what to install, no
half-made virtualenv left for the next run to trip over, and one left before is named."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

import dev


def _pointing_at(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    monkeypatch.setattr(dev, "VENV", folder)
    monkeypatch.setattr(dev, "BIN", folder / "bin")
    monkeypatch.setattr(dev, "STAMP", folder / ".schakel-installed")
    return folder


def _without_ensurepip(monkeypatch: pytest.MonkeyPatch) -> None:
    def create(self: venv.EnvBuilder, env_dir: str | Path) -> None:
        (Path(env_dir) / "bin").mkdir(parents=True)
        (Path(env_dir) / "bin" / "python").symlink_to(sys.executable)
        raise subprocess.CalledProcessError(1, ["python", "-m", "ensurepip"])

    monkeypatch.setattr(venv.EnvBuilder, "create", create)


def test_a_python_without_ensurepip_gets_one_line_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = _pointing_at(monkeypatch, tmp_path / "venv")
    _without_ensurepip(monkeypatch)
    with pytest.raises(SystemExit) as ended:
        dev.ensure_venv()
    assert "apt-get install python3-venv" in str(ended.value)
    assert not folder.exists()


def test_a_virtualenv_left_without_pip_is_named_not_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = _pointing_at(monkeypatch, tmp_path / "venv")
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # no pip in it
    (folder / "bin" / "python").chmod(0o755)
    with pytest.raises(SystemExit) as ended:
        dev.ensure_venv()
    assert f"remove it (rm -r {folder})" in str(ended.value), "not pip's 'No module named pip'"
    assert folder.exists(), "someone else's folder is not deleted"
