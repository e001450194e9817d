"""The HTTP systems under test, each started as a child process pointed at the fake upstream.

- ``upstream``: the fake upstream itself, called directly (the baseline every "added" is
  measured against).
- ``polyroute``: ``polyroute serve`` with a config whose only provider is ``openai`` at the
  upstream.
- ``litellm``: the LiteLLM proxy (``litellm --config``) with the same upstream.
- ``agentos``: Agno's AgentOS serving agents whose model is ``OpenAILike`` at the upstream.

All three servers run one process, uvicorn with uvloop and httptools, access logging off, and
SQLite where they store anything. An agent remembers about three turns of history in each
system (Agno's ``num_history_runs=3``; polyroute's ``historyTokenWindow`` sized to match), so
the upstream receives payloads of the same size from both.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import orjson

from bench import procs
from bench.clients import API_KEY, PROMPT

__all__ = ["Target", "WrkRequest", "start_target"]

#: the answer shapes every system is configured for: throughput/latency and relay checks
FAST_MODEL = "bench-t16-d0"
SLOW_MODEL = "bench-t8-d20"
SCENARIO_MODEL = "bench-t64-d5"
MODELS = (FAST_MODEL, SLOW_MODEL, SCENARIO_MODEL)
#: roughly three turns of the bench conversation, in polyroute's 4-characters-per-token estimate
HISTORY_TOKEN_WINDOW = 150

_QUIET_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"uvicorn.access": {"level": "WARNING"}, "uvicorn.error": {"level": "WARNING"}},
}


@dataclass(frozen=True)
class WrkRequest:
    """What a load generator sends: one method and header set, requests cycling over (path, body)."""

    method: str
    items: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]


@dataclass
class Target:
    name: str
    base: str
    child: procs.Child | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: model name per upstream answer shape, as this system spells it
    models: dict[str, str] = field(default_factory=dict)
    #: agent ids per upstream answer shape (agent-capable systems only)
    agents: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def has_chat(self) -> bool:
        return bool(self.models)

    @property
    def has_agents(self) -> bool:
        return bool(self.agents)

    def chat_body(self, shape: str, *, stream: bool, prompt: str = PROMPT) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.models[shape], "messages": [{"role": "user", "content": prompt}]}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def chat_request(self, shape: str, *, stream: bool, prompt: str = PROMPT) -> WrkRequest:
        body = orjson.dumps(self.chat_body(shape, stream=stream, prompt=prompt)).decode()
        headers = {**self.headers, "Content-Type": "application/json"}
        return WrkRequest("POST", (("/v1/chat/completions", body),), tuple(headers.items()))

    def new_sessions(self, shape: str, count: int) -> list[str]:
        """Fresh session ids for the agent of ``shape`` (created on the server where it needs that)."""
        if self.name == "polyroute":
            agent = self.agents[shape]
            with httpx2.Client(base_url=self.base, headers=self.headers, timeout=30) as client:
                out = []
                for _ in range(count):
                    r = client.post(f"/agents/{agent}/sessions", json={"userId": "bench"})
                    r.raise_for_status()
                    out.append(str(r.json()["sessionId"]))
                return out
        return [f"bench-{secrets.token_hex(8)}" for _ in range(count)]

    def agent_call(
        self, shape: str, session: str, *, stream: bool, prompt: str = PROMPT
    ) -> tuple[str, str, dict[str, str]]:
        """(path, body, headers) of one agent message in ``session``."""
        agent = self.agents[shape]
        if self.name == "polyroute":
            body = orjson.dumps({"role": "user", "content": prompt, "stream": stream}).decode()
            headers = {**self.headers, "Content-Type": "application/json"}
            return f"/agents/{agent}/sessions/{session}/messages", body, headers
        form = urllib.parse.urlencode(
            {"message": prompt, "stream": "true" if stream else "false", "session_id": session, "user_id": "bench"}
        )
        headers = {**self.headers, "Content-Type": "application/x-www-form-urlencoded"}
        return f"/agents/{agent}/runs", form, headers

    def agent_request(self, shape: str, sessions: list[str], *, stream: bool, prompt: str = PROMPT) -> WrkRequest:
        items = []
        headers: dict[str, str] = {}
        for sid in sessions:
            path, body, headers = self.agent_call(shape, sid, stream=stream, prompt=prompt)
            items.append((path, body))
        return WrkRequest("POST", tuple(items), tuple(headers.items()))

    def rss_mb(self) -> float:
        return self.child.rss_mb() if self.child else 0.0

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _yaml(data: Any) -> str:
    # JSON is valid YAML, and every config reader here accepts it.
    return json.dumps(data, indent=2)


def _wait_ready(child: procs.Child, url: str, timeout: float) -> None:
    if not procs.wait_port(child.port, timeout, child.proc):
        raise RuntimeError(f"{child.name} did not start (exit code {child.proc.poll()}):\n{child.log_tail()}")
    with httpx2.Client(timeout=5) as client:
        for _ in range(int(timeout * 10)):
            with contextlib.suppress(httpx2.HTTPError):
                if client.get(url).status_code < 500:
                    return
            if not child.alive():
                break
            import time

            time.sleep(0.1)
    raise RuntimeError(f"{child.name} never became ready at {url}:\n{child.log_tail()}")


@contextlib.contextmanager
def _stop_on_error(child: procs.Child) -> Iterator[None]:
    """Stop a started server when its set-up fails, so no server outlives a failed run."""
    try:
        yield
    except BaseException:
        child.stop()
        raise


def _start_polyroute(work: Path, upstream: str, cpus: set[int] | None) -> Target:
    port = procs.free_port()
    config = {
        "providers": {"openai": {"endpoint": upstream, "apiKey": API_KEY, "timeout": 60}},
        "runtime": {"router": {"maxConcurrency": 1024, "timeout": 60}},
        "server": {"host": "127.0.0.1", "port": port, "dataDir": str(work / "polyroute-data"), "logLevel": "warning"},
    }
    cfg = _write(work / "polyroute.yaml", _yaml(config))
    child = procs.start(
        "polyroute",
        [procs.PYTHON, "-m", "polyroute.cli", "serve", "--config", str(cfg), "--env-file", str(work / "no.env")],
        logs=work / "logs",
        cpus=cpus,
        port=port,
        cwd=work,
        env={"POLYROUTE_API_KEYS": "", "OPENAI_API_KEY": API_KEY},
    )
    target = Target("polyroute", f"http://127.0.0.1:{port}", child)
    with _stop_on_error(child):
        _wait_ready(child, target.base + "/health", 60)
        target.models = {m: f"openai:{m}" for m in MODELS}
        with httpx2.Client(base_url=target.base, timeout=30) as client:
            for m in MODELS:
                config = {"historyTokenWindow": HISTORY_TOKEN_WINDOW}
                r = client.post("/agents", json={"name": f"bench {m}", "model": f"openai:{m}", "config": config})
                r.raise_for_status()
                target.agents[m] = str(r.json()["agentId"])
    return target


def _start_litellm(work: Path, upstream: str, cpus: set[int] | None) -> Target:
    port = procs.free_port()
    master = "sk-" + secrets.token_hex(32)
    config = {
        "model_list": [
            {"model_name": m, "litellm_params": {"model": f"openai/{m}", "api_base": upstream, "api_key": API_KEY}}
            for m in MODELS
        ],
        "litellm_settings": {"telemetry": False, "num_retries": 0},
        "general_settings": {"master_key": master},
    }
    cfg = _write(work / "litellm.yaml", _yaml(config))
    log_cfg = _write(work / "litellm-logging.json", json.dumps(_QUIET_LOGGING))
    child = procs.start(
        "litellm",
        [
            str(Path(procs.PYTHON).parent / "litellm"),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
            "--log_config",
            str(log_cfg),
        ],
        logs=work / "logs",
        cpus=cpus,
        port=port,
        cwd=work,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"},
    )
    target = Target("litellm", f"http://127.0.0.1:{port}", child, headers={"Authorization": f"Bearer {master}"})
    with _stop_on_error(child):
        _wait_ready(child, target.base + "/health/liveliness", 120)
    target.models = {m: m for m in MODELS}
    return target


def _start_agentos(work: Path, upstream: str, cpus: set[int] | None) -> Target:
    port = procs.free_port()
    child = procs.start(
        "agentos",
        [
            procs.PYTHON,
            "-m",
            "uvicorn",
            "bench.agno_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        logs=work / "logs",
        cpus=cpus,
        port=port,
        cwd=Path(__file__).resolve().parent.parent,
        env={
            "BENCH_UPSTREAM": upstream,
            "BENCH_DB": str(work / "agno.db"),
            "BENCH_MODELS": ",".join(MODELS),
            "AGNO_TELEMETRY": "false",
            "AGNO_MONITOR": "false",
        },
    )
    target = Target("agentos", f"http://127.0.0.1:{port}", child)
    with _stop_on_error(child):
        _wait_ready(child, target.base + "/health", 90)
    target.agents = {m: m.replace(".", "_") for m in MODELS}
    return target


def start_target(name: str, work: Path, upstream: str, cpus: set[int] | None) -> Target:
    """Start one system (``upstream`` is the fake upstream's ``/v1`` URL)."""
    starters = {"polyroute": _start_polyroute, "litellm": _start_litellm, "agentos": _start_agentos}
    return starters[name](work / name, upstream, cpus)


def upstream_target(child: procs.Child) -> Target:
    base = f"http://127.0.0.1:{child.port}"
    return Target("upstream", base, child, models={m: m for m in MODELS})


@contextlib.contextmanager
def running(name: str, work: Path, upstream: str, cpus: set[int] | None) -> Iterator[Target]:
    target = start_target(name, work, upstream, cpus)
    try:
        yield target
    finally:
        target.stop()
