"""Router state shared by replicas through Redis: rpm/tpm limits and open circuits.

Per-process token buckets and breakers multiply with replicas: three replicas with a
500 rpm limit send 1500 rpm. With a :class:`SharedState` the buckets live in Redis, checked
and debited atomically by one Lua script per admission (one round trip, only for
deployments that have limits), and a replica whose circuit opens publishes the deadline so
the others skip the deployment too.

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

if TYPE_CHECKING:
    from polyroute.router.ratelimit import TokenBucket

__all__ = ["SharedState", "SharedStatus"]

log = logging.getLogger("polyroute.router")

SharedStatus = Literal["idle", "ok", "degraded"]

#: check-and-consume over an rpm and a tpm bucket (either may be absent: rate 0).
#: KEYS: rpm bucket, tpm bucket. ARGV: now ("" = Redis TIME), rpm rate, rpm capacity,
#: tpm rate, tpm capacity, tokens. Returns "0" (admitted, both debited) or the seconds
#: until both buckets hold enough (nothing debited), as in ``TokenBucket.wait``/``adjust``.
_ADMIT = """
local now = tonumber(ARGV[1])
if not now then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local need = {1, tonumber(ARGV[6])}
local level, stamp = {}, {}
local wait = 0
for i = 1, 2 do
  local rate, cap = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if rate > 0 then
    local v = redis.call('HMGET', KEYS[i], 'l', 's')
    local l, s = tonumber(v[1]), tonumber(v[2])
    if not l then l, s = cap, now end
    if now > s then l = math.min(cap, l + (now - s) * rate); s = now end
    level[i], stamp[i] = l, s
    local missing = math.min(need[i], cap) - l
    if missing > 0 and missing / rate > wait then wait = missing / rate end
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, 2 do
  if level[i] then
    local rate, cap = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    local l = level[i] - need[i]
    redis.call('HSET', KEYS[i], 'l', tostring(l), 's', tostring(stamp[i]))
    redis.call('PEXPIRE', KEYS[i], math.ceil((cap - l) / rate * 1000) + 1000)
  end
end
return '0'
"""

#: open circuits live in one sorted set (deployment -> deadline in Redis ms) plus a hash
#: (deployment -> the replica that opened it), so a starting replica loads them in one call.
_NOW_MS = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: publish an open circuit, keeping the later deadline.
#: KEYS: set, origins. ARGV: deployment, ms, message, channel, origin.
_OPEN = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ms = tonumber(ARGV[2])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not old or old < now + ms then
  redis.call('ZADD', KEYS[1], now + ms, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
end
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ms then redis.call('PEXPIRE', KEYS[i], ms) end
end
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""
)

#: every circuit still open: a flat list of deployment, ms left, origin. KEYS: set, origins.
_LOAD = (
    _NOW_MS
    + """
local out = {}
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = tostring(tonumber(rows[i + 1]) - now)
  out[#out + 1] = redis.call('HGET', KEYS[2], rows[i]) or ''
end
return out
"""
)


class SharedState:
    """A Redis connection shared by the router's deployments; pass it as ``Router(shared=...)``.

    ``prefix`` namespaces every key and the breaker channel (replicas that should share
    limits use the same prefix). ``timeout`` bounds each Redis command; past it the call
    goes on with local limits. ``clock`` (wall seconds, the same on every replica) replaces
    Redis's own ``TIME`` in the limit script; tests use it to freeze refills.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "polyroute",
        timeout: float = 0.05,
        retry_interval: float = 1.0,
        warn_interval: float = 60.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise ConfigError("shared router state needs redis-py: pip install 'polyroute[redis]'") from None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"shared router state: expected a redis:// URL, got {url.partition(':')[0]!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.warn_interval = warn_interval
        self.clock = clock
        self.origin = uuid.uuid4().hex
        self.channel = f"{prefix}:breaker"
        self._client: Any = None
        self._admit: Any = None
        self._open: Any = None
        self._keys = [f"{prefix}:open", f"{prefix}:open:by"]
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._status: SharedStatus = "idle"
        self._down_until = 0.0
        self._warned_at = -float("inf")
        #: deployment id -> monotonic deadline of a circuit another replica opened
        self._remote: dict[str, float] = {}
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
            self._admit = self._client.register_script(_ADMIT)
            self._open = self._client.register_script(_OPEN)
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
        now = "" if self.clock is None else repr(self.clock())
        args = (
            now,
            rpm.rate if rpm else 0,
            rpm.capacity if rpm else 0,
            tpm.rate if tpm else 0,
            tpm.capacity if tpm else 0,
            tokens,
        )
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._admit(keys=[f"{base}:rpm", f"{base}:tpm"], args=args)
        except Exception as exc:  # any Redis trouble means local limits, never a failed call
            self._failed("rate limit", exc)
            return None
        self._status = "ok"
        return float(answer)

    # ------------------------------------------------------------------ breakers

    def remote_open(self, deployment: str) -> float:
        """Seconds until a circuit another replica opened for ``deployment`` ends (0.0: none).

        A dict lookup: the breaker channel is followed in the background, so admission never
        waits for Redis to learn about circuits.
        """
        self._ensure_listener()
        until = self._remote.get(deployment)
        if until is None:
            return 0.0
        now = time.monotonic()
        if until <= now:
            del self._remote[deployment]
            return 0.0
        return until - now

    def publish_open(self, deployment: str, seconds: float) -> None:
        """Tell the other replicas ``deployment``'s circuit is open for ``seconds`` (in the background)."""
        if seconds > 0:
            self._spawn(self._publish(deployment, "open", seconds))

    def publish_closed(self, deployment: str) -> None:
        """Tell the other replicas a probe succeeded: ``deployment``'s circuit is closed again."""
        self._spawn(self._publish(deployment, "closed", 0.0))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, deployment: str, state: str, seconds: float) -> None:
        if not self._available():
            return
        client = self._connect()
        self._ensure_listener()
        ms = max(1, round(seconds * 1000))
        message = orjson.dumps({"d": deployment, "s": state, "ms": ms, "o": self.origin})
        try:
            async with asyncio.timeout(self.timeout):
                if state == "open":
                    await self._open(keys=self._keys, args=(deployment, ms, message, self.channel, self.origin))
                else:
                    async with client.pipeline(transaction=True) as pipe:
                        pipe.zrem(self._keys[0], deployment).hdel(self._keys[1], deployment)
                        await pipe.publish(self.channel, message).execute()
        except Exception as exc:
            self._failed("breaker", exc)

    async def start(self) -> None:
        """Follow the breaker channel now and wait until subscribed (else it starts on first use)."""
        self._ensure_listener()
        async with asyncio.timeout(max(1.0, self.timeout)):
            await self._ready.wait()

    async def flush(self) -> None:
        """Wait for the circuit transitions published in the background (tests, shutdown)."""
        if self._tasks:
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
                    await self._load_open(client)
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

    async def _load_open(self, client: Any) -> None:
        async with asyncio.timeout(max(self.timeout, 1.0)):
            rows = await client.eval(_LOAD, 2, *self._keys)
        now = time.monotonic()
        for i in range(0, len(rows) - 2, 3):
            if rows[i + 2] != self.origin.encode():
                name = rows[i].decode()
                self._remote[name] = max(self._remote.get(name, 0.0), now + float(rows[i + 1]) / 1000)

    def _on_message(self, data: Any) -> None:
        try:
            body = orjson.loads(data)
            deployment, state, ms, origin = body["d"], body["s"], body["ms"], body["o"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return
        if origin == self.origin:
            return
        if state == "closed":
            self._remote.pop(deployment, None)
        elif state == "open":
            until = time.monotonic() + ms / 1000
            self._remote[deployment] = max(self._remote.get(deployment, 0.0), until)

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
