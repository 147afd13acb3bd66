"""The one way to start a fraudstream worker as a child process.

``WorkerProcess("stage1", settings, log_dir)`` runs ``python -m streams stage1`` with the settings
as ``FRAUD_*`` variables (and nothing else of the caller's ``FRAUD_*`` environment), its output in
a log file (never a pipe nobody reads). The demo, the bench, the crash-test runner and the tests
all start workers through it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from streams.settings import Settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The caller's environment without its ``FRAUD_*`` variables, plus ``settings`` as
    ``FRAUD_*`` variables and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env.update(settings.as_env())
    env.update(extra)
    return env


class WorkerProcess:
    """One worker (``stage1`` or ``stage2``) that can be started, killed and restarted; each
    start logs to a file of its own in ``log_dir``."""

    def __init__(
        self,
        stage: str,
        settings: Settings,
        log_dir: Path,
        name: str = "",
        **env: str,
    ):
        """``env``: more variables for the worker (``FRAUD_LOG_LEVEL`` is INFO unless given,
        e.g. ``FRAUD_METRICS_PORT``)."""
        self.stage = stage
        self.name = name or stage
        self.env = worker_env(settings, **{"FRAUD_LOG_LEVEL": "INFO", **env})
        self.log_dir = Path(log_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = self.log_dir / f"{self.name}.log"

    def start(self) -> WorkerProcess:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._free_log_path()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", self.stage],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def _free_log_path(self) -> Path:
        """``<name>.log``, or ``<name>-<n>.log`` with the first n not taken (restarts, or
        another worker of the same name in the same folder)."""
        path, n = self.log_dir / f"{self.name}.log", 1
        while path.exists():
            n += 1
            path = self.log_dir / f"{self.name}-{n}.log"
        return path

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no leaving the group."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout``); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def wait_log(
        self, text: str, timeout_s: float = 60, until: threading.Event | None = None
    ) -> bool:
        """Wait until this start's log contains ``text`` (True), or ``until`` is set first
        (False); RuntimeError if the process exits or the time runs out first."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            if until is not None and until.is_set():
                return False
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} in the {self.name} log:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        return True

    def poll(self) -> int | None:
        """The exit code, None while it runs (``Popen.poll``: readiness checks take either)."""
        return self.proc.poll() if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.proc else ""

    def exit_line(self) -> str:
        """One line on a worker that exited: its name, code, the ``error:`` line it printed
        (or its log's last line) and where its log is."""
        lines = [line for line in self.log().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        said = (errors or lines or ["(nothing in its log)"])[-1].strip().removeprefix("error: ")
        return f"{self.name} exited with code {self.returncode}: {said} (log: {self.log_path})"

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive:
            self.stop()
