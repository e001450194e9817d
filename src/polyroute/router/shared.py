"""Router state shared by replicas through Redis: rpm/tpm limits, circuits, probes, refused keys.

Per-process token buckets and breakers multiply with replicas: three replicas with a
500 rpm limit send 1500 rpm, and three breakers send three probes to a provider that is
still down. With a :class:`SharedState` the buckets live in Redis, checked and debited
atomically by one Lua script per admission (one round trip, only for deployments that have
limits) and settled to the real token count when the call reports it; a replica whose
circuit opens publishes the deadline so the others skip the deployment too; once that
deadline passes, replicas take a probe lease (``SET NX PX``) so exactly one of them probes
while the others keep skipping; and a key a provider refused is skipped by every replica
using the same key.

Redis is an optimisation, never a dependency of a call: every command runs under a short
timeout, and when Redis is unreachable or slow the router falls back to its local buckets
(``status`` says ``degraded``, a warning is logged at most once per ``warn_interval``) and
tries Redis again after ``retry_interval``. ``redis`` is imported only when a SharedState
is created, so routers without one never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import orjson

from polyroute.errors import ConfigError
from polyroute.router import _redis_scripts as scripts

if TYPE_CHECKING:
    from polyroute.router.ratelimit import TokenBucket

__all__ = ["RemoteState", "SharedState", "SharedStatus"]

log = logging.getLogger("polyroute.router")

SharedStatus = Literal["idle", "ok", "degraded"]

#: what the other replicas say about a deployment (None: nothing)
RemoteState = Literal["open", "half_open", "auth_failed"]


class SharedState:
    """A Redis connection shared by the router's deployments; pass it as ``Router(shared=...)``.

    ``prefix`` namespaces every key and the breaker channel (replicas that should share
    limits use the same prefix). ``timeout`` bounds each Redis command; past it the call
    goes on with local limits. ``clock`` (wall seconds, the same on every replica) replaces
    Redis's own ``TIME`` in the limit scripts; tests use it to freeze refills. ``auth_ttl``
    is how long a key refused on one replica is skipped by the others (each replica's own
    breaker keeps skipping it until the key changes, as without shared state).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "polyroute",
        timeout: float = 0.05,
        retry_interval: float = 1.0,
        warn_interval: float = 60.0,
        auth_ttl: float = 3600.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise ConfigError("shared router state needs redis-py: pip install 'polyroute[redis]'") from None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"shared router state: expected a redis:// URL, got {url.partition(':')[0]!r}")
        if auth_ttl <= 0:
            raise ConfigError("shared router state: auth_ttl must be positive")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.warn_interval = warn_interval
        self.auth_ttl = auth_ttl
        self.clock = clock
        self.origin = uuid.uuid4().hex
        self.channel = f"{prefix}:breaker"
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._open_key, self._origins_key, self._auth_key = f"{prefix}:open", f"{prefix}:open:by", f"{prefix}:auth"
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._status: SharedStatus = "idle"
        self._down_until = 0.0
        self._warned_at = -float("inf")
        #: deployment id -> monotonic deadline of a circuit another replica opened; kept past
        #: the deadline (half-open) until a probe anywhere closes it
        self._remote: dict[str, float] = {}
        #: deployment id -> monotonic time until which its key counts as refused elsewhere
        self._auth: dict[str, float] = {}
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def status(self) -> SharedStatus:
        """``idle`` (not used yet), ``ok``, or ``degraded`` (the last command failed: local limits)."""
        return self._status

    # ------------------------------------------------------------------ connection

    def _connect(self) -> Any:
        """The client for the running loop (redis-py connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._loop = loop
            self._client = aredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            names = ("ADMIT", "OPEN", "SETTLE", "RELEASE", "CLOSE", "AUTH")
            self._scripts = {name: self._client.register_script(getattr(scripts, name)) for name in names}
        return self._client

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._status = "degraded"
        self._down_until = now + self.retry_interval
        if now - self._warned_at >= self.warn_interval:
            self._warned_at = now
            log.warning(
                "shared router state unavailable (%s: %s: %s); using this replica's own limits",
                what,
                type(exc).__name__,
                exc,
            )

    def _now_arg(self) -> str:
        return "" if self.clock is None else repr(self.clock())

    def _lease(self, deployment: str) -> str:
        return f"{self.prefix}:probe:{deployment}"

    # ------------------------------------------------------------------ limits

    async def admit(
        self, deployment: str, rpm: TokenBucket | None, tpm: TokenBucket | None, tokens: float
    ) -> float | None:
        """Take one request and ``tokens`` tokens from the shared buckets of ``deployment``.

        0.0: admitted (debited); > 0: seconds until the buckets allow it (nothing debited);
        None: Redis is unavailable, so the caller decides with its local buckets.
        """
        if not self._available():
            return None
        self._connect()
        self._ensure_listener()
        base = f"{self.prefix}:limit:{deployment}"
        args = (
            self._now_arg(),
            rpm.rate if rpm else 0,
            rpm.capacity if rpm else 0,
            tpm.rate if tpm else 0,
            tpm.capacity if tpm else 0,
            tokens,
        )
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._scripts["ADMIT"](keys=[f"{base}:rpm", f"{base}:tpm"], args=args)
        except Exception as exc:  # any Redis trouble means local limits, never a failed call
            self._failed("rate limit", exc)
            return None
        self._status = "ok"
        return float(answer)

    def settle(self, deployment: str, tpm: TokenBucket, delta: float) -> None:
        """Correct the shared tpm bucket by ``delta`` tokens (real - debited), in the background."""
        if delta:
            key = f"{self.prefix}:limit:{deployment}:tpm"
            self._spawn(self._run("SETTLE", "rate limit", [key], (self._now_arg(), tpm.rate, tpm.capacity, delta)))

    # ------------------------------------------------------------------ breakers

    def remote_state(self, deployment: str) -> tuple[RemoteState | None, float]:
        """What other replicas said about ``deployment``, and seconds until an open circuit may be probed.

        A dict lookup: the breaker channel is followed in the background, so admission never
        waits for Redis to learn about circuits. ``half_open`` means a circuit another
        replica opened has passed its deadline and no probe has closed it yet: calling it
        needs the probe lease (:meth:`claim_probe`).
        """
        self._ensure_listener()
        auth = self._auth.get(deployment)
        now = time.monotonic()
        if auth is not None:
            if auth > now:
                return "auth_failed", 0.0
            del self._auth[deployment]
        until = self._remote.get(deployment)
        if until is None:
            return None, 0.0
        if until > now:
            return "open", until - now
        return "half_open", 0.0

    def remote_open(self, deployment: str) -> float:
        """Seconds until a circuit another replica opened for ``deployment`` may be probed (0.0: none)."""
        state, seconds = self.remote_state(deployment)
        return seconds if state == "open" else 0.0

    def forget(self, deployment: str) -> None:
        """Drop what other replicas said about ``deployment`` (this replica's probe just answered)."""
        self._remote.pop(deployment, None)

    async def claim_probe(self, deployment: str, seconds: float) -> bool | None:
        """Take the one probe lease of ``deployment`` for ``seconds``.

        True: this replica probes; False: another replica's probe is in flight (skip it);
        None: Redis is unavailable (this replica's own breaker decides alone). The lease
        expires by itself, so a replica that dies mid-probe blocks the others only until then.
        """
        if not self._available():
            return None
        client = self._connect()
        self._ensure_listener()
        try:
            async with asyncio.timeout(self.timeout):
                won = await client.set(self._lease(deployment), self.origin, nx=True, px=max(1, round(seconds * 1000)))
        except Exception as exc:
            self._failed("probe lease", exc)
            return None
        self._status = "ok"
        return bool(won)

    def release_probe(self, deployment: str) -> None:
        """Give the probe lease back (the probe said nothing about the deployment), in the background."""
        self._spawn(self._run("RELEASE", "probe lease", [self._lease(deployment)], (self.origin,)))

    def publish_open(self, deployment: str, seconds: float) -> None:
        """Tell the other replicas ``deployment``'s circuit is open for ``seconds`` (in the background)."""
        if seconds > 0:
            ms = max(1, round(seconds * 1000))
            keys = [self._open_key, self._origins_key, self._lease(deployment)]
            args = (deployment, ms, self._message(deployment, "open", ms), self.channel, self.origin)
            self._spawn(self._run("OPEN", "breaker", keys, args))

    def publish_closed(self, deployment: str) -> None:
        """Tell the other replicas a probe succeeded: ``deployment`` is callable again everywhere."""
        self.forget(deployment)
        keys = [self._open_key, self._origins_key, self._auth_key, self._lease(deployment)]
        args = (deployment, self._message(deployment, "closed", 0), self.channel, self.origin)
        self._spawn(self._run("CLOSE", "breaker", keys, args))

    def publish_auth(self, deployment: str) -> None:
        """Tell the other replicas the provider refused ``deployment``'s key (they skip it for ``auth_ttl``)."""
        ms = max(1, round(self.auth_ttl * 1000))
        keys = [self._auth_key, self._lease(deployment)]
        args = (deployment, ms, self._message(deployment, "auth", ms), self.channel, self.origin)
        self._spawn(self._run("AUTH", "breaker", keys, args))

    def _message(self, deployment: str, state: str, ms: int) -> bytes:
        return orjson.dumps({"d": deployment, "s": state, "ms": ms, "o": self.origin})

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, script: str, what: str, keys: list[str], args: tuple[Any, ...]) -> None:
        """One background script call; trouble only degrades shared state, never a call."""
        if not self._available():
            return
        self._connect()
        self._ensure_listener()
        try:
            async with asyncio.timeout(self.timeout):
                await self._scripts[script](keys=keys, args=args)
        except Exception as exc:
            self._failed(what, exc)

    async def start(self) -> None:
        """Follow the breaker channel now and wait until subscribed (else it starts on first use)."""
        self._ensure_listener()
        async with asyncio.timeout(max(1.0, self.timeout)):
            await self._ready.wait()

    async def flush(self) -> None:
        """Wait for the circuit transitions published in the background (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _ensure_listener(self) -> None:
        if self._closing:
            return
        task, loop = self._listener, asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._ready = asyncio.Event()
            self._listener = loop.create_task(self._listen())

    async def _listen(self) -> None:
        """Follow the breaker channel (after loading circuits opened before we subscribed)."""
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        while not self._stopping():
            # its own connection without a read timeout: a quiet channel is not a failure
            client = aredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0))
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._load(client)
                    self._ready.set()
                    self._status = "ok"
                    # short polls, because redis-py can swallow a cancellation mid-command
                    while not self._stopping():
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None:
                            self._on_message(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping():
                    self._failed("breaker channel", exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            if not self._stopping():
                await asyncio.sleep(self.retry_interval)

    def _stopping(self) -> bool:
        task = asyncio.current_task()
        return self._closing or (task is not None and task.cancelling() > 0)

    async def _load(self, client: Any) -> None:
        """Circuits still open and keys still refused, as other replicas recorded them."""
        async with asyncio.timeout(max(self.timeout, 1.0)):
            rows = await client.eval(scripts.LOAD, 3, self._open_key, self._origins_key, self._auth_key)
        now = time.monotonic()
        for i in range(0, len(rows) - 3, 4):
            kind, name, ms, origin = rows[i].decode(), rows[i + 1].decode(), float(rows[i + 2]), rows[i + 3]
            until = now + ms / 1000
            if kind == "auth":
                self._auth[name] = max(self._auth.get(name, 0.0), until)
            elif origin != self.origin.encode():
                self._remote[name] = max(self._remote.get(name, 0.0), until)

    def _on_message(self, data: Any) -> None:
        try:
            body = orjson.loads(data)
            deployment, state, ms, origin = body["d"], body["s"], body["ms"], body["o"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return
        if origin == self.origin:
            return
        until = time.monotonic() + ms / 1000
        if state == "closed":
            self._remote.pop(deployment, None)
            self._auth.pop(deployment, None)
        elif state == "open":
            self._remote[deployment] = max(self._remote.get(deployment, 0.0), until)
        elif state == "auth":
            self._auth[deployment] = max(self._auth.get(deployment, 0.0), until)

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Stop following the breaker channel, finish pending publishes, close the connection."""
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({self._listener}, timeout=1.0)
            self._listener = None
        await self.flush()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
