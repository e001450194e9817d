"""Starting, watching and stopping the processes a benchmark run needs.

Every server (the fake upstream, polyroute, the LiteLLM proxy, AgentOS) runs as a child
process that this module starts, pins to a CPU when asked, measures (resident memory of the
whole process tree, read from ``/proc``) and stops by its own pid: nothing here signals a
process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "RSSSampler", "free_port", "start", "wait_port"]

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """True once something accepts connections on 127.0.0.1:port (False on timeout or exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _descendants(pid: int) -> list[int]:
    out = [pid]
    i = 0
    while i < len(out):
        task_dir = Path(f"/proc/{out[i]}/task")
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                with contextlib.suppress(OSError):
                    out.extend(int(c) for c in (task / "children").read_text().split())
        i += 1
    return out


def _status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (10^6 bytes)."""
    return sum(_status_kb(p, "VmRSS:") for p in _descendants(pid)) * 1024 / 1e6


def tree_hwm_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) summed over the process tree, in MB."""
    return sum(_status_kb(p, "VmHWM:") for p in _descendants(pid)) * 1024 / 1e6


@dataclass
class Child:
    """A started child process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        return tree_rss_mb(self.pid)

    def hwm_mb(self) -> float:
        return tree_hwm_mb(self.pid)

    def log_tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's own process group (it was started in a new session), then SIGKILL."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def start(
    name: str,
    argv: Sequence[str],
    *,
    logs: Path,
    env: Mapping[str, str] | None = None,
    cpus: set[int] | None = None,
    cwd: Path | None = None,
    port: int = 0,
) -> Child:
    """Start ``argv`` in its own session (so it can be stopped as a group), logging to a file."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    fh = log.open("wb")
    full_env = {**os.environ, **(env or {})}

    def pin() -> None:
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(
        list(argv),
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=pin if cpus else None,  # noqa: PLW1509 - only sets CPU affinity
    )
    fh.close()
    return Child(name, proc, log, port)


@dataclass
class RSSSampler:
    """Samples a process tree's RSS in a background thread; ``samples`` is (seconds, MB)."""

    pid: int
    interval: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RSSSampler:
        start = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                self.samples.append((time.monotonic() - start, tree_rss_mb(self.pid)))
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append((self.samples[-1][0] if self.samples else 0.0, tree_rss_mb(self.pid)))

    @property
    def peak(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)
