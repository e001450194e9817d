"""The guide's first example: prefer one provider, fall back to another.

Run with whatever keys and base URLs your environment has, e.g.
    OPENAI_API_KEY=... GEMINI_API_KEY=... python examples/fallback_chat.py
With no keys at all, both candidates are reported as not configured (and the error lists
each attempt); add ``--local`` to end the chain on the embedded SmolLM2 model.
"""

from __future__ import annotations

import asyncio
import os
import sys

from polyroute import ChatRequest, Message, Router, errors
from polyroute.providers import GeminiProvider, OpenAIProvider


async def main() -> int:
    router = Router(max_concurrency=16, timeout=30.0)
    router.register(OpenAIProvider.from_env())
    router.register(GeminiProvider.from_env())
    fallbacks = ["gemini:gemini-2.0-flash"]
    if "--local" in sys.argv:
        from polyroute.providers.local import LocalProvider

        router.register(LocalProvider())
        fallbacks.append("local:smollm2")
    async with router:
        try:
            resp = await router.chat(
                ChatRequest(
                    model=os.environ.get("POLYROUTE_MODEL", "openai:gpt-4o-mini"),
                    fallbacks=fallbacks,
                    messages=[Message.user("Recommend a cheap, fast model for a small internal tool.")],
                    max_tokens=200,
                )
            )
        except errors.PolyrouteError as exc:
            print(f"no provider answered: {exc}", file=sys.stderr)
            return 1
    print(resp.provider, resp.message.content)
    for attempt in resp.attempts:
        print(f"  {attempt.provider}:{attempt.model} {attempt.outcome} {attempt.error or ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
