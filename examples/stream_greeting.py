"""The guide's second example: the same router, streaming tokens as they arrive.

    OPENAI_API_KEY=... python examples/stream_greeting.py
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/stream_greeting.py   # any OpenAI-compatible server
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
    request = ChatRequest(
        model=os.environ.get("POLYROUTE_MODEL", "openai:gpt-4o-mini"),
        fallbacks=["gemini:gemini-2.0-flash"],
        messages=[Message.user("Stream a short greeting.")],
        max_tokens=64,
    )
    async with router:
        try:
            async for event in router.stream(request):
                if event.type == "token":
                    print(event.delta, end="", flush=True)
                if event.done:
                    print()
                    if event.response is not None:
                        print(f"(answered by {event.response.provider})", file=sys.stderr)
        except errors.PolyrouteError as exc:
            print(f"\nstream failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
