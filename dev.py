#!/usr/bin/env python3
"""Set-up and entry point for a fresh machine that has only python3.

    python3 dev.py demo    # create/reuse .venv, install, run `schakel demo`
    python3 dev.py test    # create/reuse .venv, install, run the whole test suite
    python3 dev.py run     # create/reuse .venv, install, run `schakel run`
    python3 dev.py bench   # create/reuse .venv, install, run the benchmark (`--smoke`: tiny)

Any further arguments go to the command (e.g. `python3 dev.py test -k consent`).
The virtualenv is reinstalled only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SCHAKEL_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".schakel-installed"


def say(text: str) -> None:
    print(f"[dev] {text}", flush=True)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"[dev] Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if (BIN / "python").exists() and not STAMP.exists() and not _has_pip():
        sys.exit(
            f"[dev] the virtualenv {VENV} has no pip (an earlier attempt failed half-way?): "
            f"remove it (rm -r {VENV}) and run this again"
        )
    if not (BIN / "python").exists():
        say(f"creating virtualenv {VENV}")
        fresh = not VENV.exists()
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (subprocess.CalledProcessError, OSError) as exc:
            if fresh:  # nothing half-made left for the next run to trip over
                shutil.rmtree(VENV, ignore_errors=True)
            sys.exit(
                f"[dev] cannot create the virtualenv {VENV}: {exc}. Its pip comes from "
                "Python's ensurepip, which Debian and Ubuntu ship apart: "
                "apt-get install python3-venv (or python3.11-venv), then run this again"
            )
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    say(
        "installing Schakel and its dependencies into the virtualenv (first run takes a minute or two)"
    )
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-e",
            f"{ROOT}[test]",
        ],
        check=True,
    )
    STAMP.write_text(wanted)


def _has_pip() -> bool:
    return (
        subprocess.run(
            [str(BIN / "python"), "-m", "pip", "--version"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        == 0
    )


def ensure_chromium() -> None:
    """The console's browser test drives Debian's chromium (Playwright's own download
    cannot work offline). Installed with apt-get when missing and this user may."""
    if shutil.which("chromium"):
        return
    apt = shutil.which("apt-get")
    if apt is None or (hasattr(os, "geteuid") and os.geteuid() != 0):
        say("chromium is missing and cannot be installed here; the browser test will fail")
        return
    say("installing Debian's chromium for the browser test (apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if (
        subprocess.call(
            [apt, "install", "-y", "-q", "chromium"], env=env, stdout=subprocess.DEVNULL
        )
        != 0
    ):
        subprocess.call([apt, "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        if (
            subprocess.call(
                [apt, "install", "-y", "-q", "chromium"], env=env, stdout=subprocess.DEVNULL
            )
            != 0
        ):
            say("apt-get could not install chromium; the browser test will fail")


def postgres_reachable() -> tuple[bool, str]:
    url = os.environ.get("SCHAKEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5432
    try:
        with socket.create_connection((host, port), timeout=5):
            return True, url
    except OSError as exc:
        return False, f"{url} ({exc})"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "run", "bench"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        ensure_venv()
    except subprocess.CalledProcessError as exc:
        say(f"installation failed (exit {exc.returncode}); see pip's messages above")
        return 1
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if command == "test":
        ok, where = postgres_reachable()
        if not ok:
            say(f"ERROR: PostgreSQL is required for the tests and does not answer at {where}")
            return 1
        say(f"PostgreSQL answers at {where}")
        ensure_chromium()
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest], cwd=ROOT, env=env)
    if command == "bench":
        return subprocess.call([str(BIN / "python"), "-m", "bench", *rest], cwd=ROOT, env=env)
    return subprocess.call([str(BIN / "schakel"), command, *rest], cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
