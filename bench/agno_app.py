"""Agno's AgentOS for the benchmark: ``uvicorn bench.agno_app:app`` (started by bench.targets).

One agent per upstream answer shape, each on ``OpenAILike`` (Agno's model for any
OpenAI-compatible server) pointed at the fake upstream, sessions stored in SQLite through
Agno's async SQLite store, three runs of history sent to the model, telemetry off.
Configured from the environment: ``BENCH_UPSTREAM`` (the upstream's ``/v1`` URL),
``BENCH_DB`` (the SQLite file) and ``BENCH_MODELS`` (comma-separated model names).
"""

from __future__ import annotations

import os
from typing import Any

from agno.agent import Agent
from agno.db.sqlite import AsyncSqliteDb
from agno.models.openai.like import OpenAILike
from agno.os import AgentOS

from bench.clients import API_KEY

_upstream = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8000/v1")
_db = AsyncSqliteDb(db_file=os.environ.get("BENCH_DB", "agno-bench.db"))
_models = [m for m in os.environ.get("BENCH_MODELS", "bench-t16-d0").split(",") if m]

agents: list[Any] = [
    Agent(
        id=model.replace(".", "_"),
        name=f"bench {model}",
        model=OpenAILike(id=model, api_key=API_KEY, base_url=_upstream),
        db=_db,
        add_history_to_context=True,
        num_history_runs=3,
        telemetry=False,
    )
    for model in _models
]

agent_os = AgentOS(id="bench", agents=agents, telemetry=False)
app: Any = agent_os.get_app()
