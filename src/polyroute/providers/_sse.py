"""Incremental Server-Sent Events decoding, per the WHATWG ``text/event-stream`` rules.

Provider streams arrive in arbitrary TCP-sized pieces: an event, a line, or even a
``\\r\\n`` pair may be split across reads. :class:`SSEDecoder` buffers only the unfinished
line and hands back complete events, so callers never see a torn event. Data is kept
exactly as sent (only the one optional space after ``data:`` is removed, as the spec says),
which is what lets token text be relayed byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(slots=True, frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None


class SSEDecoder:
    """Feed raw bytes with :meth:`feed`; get back the events they complete."""

    __slots__ = ("_data", "_event", "_id", "_pending", "last_event_id", "retry")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []
        self._event = ""
        self._id: str | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None

    @property
    def has_partial(self) -> bool:
        """True when bytes of an undelivered event are buffered (a sign of truncation at EOF)."""
        return bool(self._pending.strip() or self._data)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._pending + chunk if self._pending else chunk
        if not buf:
            return []
        lines = buf.splitlines(keepends=True)
        last = lines[-1]
        # An unterminated last line, or one ending in a bare CR that may be the first half of
        # a CRLF split across reads, waits for the next chunk.
        if last[-1:] == b"\n":
            self._pending = b""
        else:
            self._pending = lines.pop()
        return self._process(lines)

    def close(self) -> list[SSEEvent]:
        """Call at end of input: completes a last line that ended in a bare CR.

        An event not yet ended by a blank line is *not* dispatched (the spec discards it);
        :attr:`has_partial` tells the caller that the stream was cut mid-event.
        """
        if self._pending[-1:] == b"\r":
            lines, self._pending = [self._pending], b""
            return self._process(lines)
        return []

    def _process(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                if self._data:
                    events.append(
                        SSEEvent(self._event or "message", b"\n".join(self._data).decode("utf-8", "replace"), self._id)
                    )
                    self.last_event_id = self._id or self.last_event_id
                self._data = []
                self._event = ""
                continue
            if line[0] == 0x3A:  # ':' comment / keep-alive
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\x00" not in value:
                    self._id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self.retry = int(value)
        return events
