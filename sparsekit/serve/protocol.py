"""uvicorn's HTTP/1.1 (h11) protocol with the read timeouts it lacks, so no connection waits forever on a client.

uvicorn only times out a connection that stays idle after a response (``timeout_keep_alive``). Here a new
connection that sends nothing is closed after that same timeout too, and a request head (request line and
headers) that is not complete ``read_timeout`` seconds after its first byte is answered 408 and closed.
The request body is timed by the app (create_app's ``read_timeout_s``), which can still answer with JSON.
"""
from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("sparsekit.serve")


class TimedH11Protocol(H11Protocol):
    """H11Protocol plus an idle timeout from the first moment and a deadline for each request head.

    Use a subclass from ``with_read_timeout`` (uvicorn builds protocols from a class, so the timeout is a
    class attribute).
    """

    read_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_read_timeout(cls, seconds: float) -> type[TimedH11Protocol]:
        """This protocol with request heads due within ``seconds`` (> 0) of their first byte."""
        if not seconds > 0:
            raise ValueError(f"read timeout must be > 0, got {seconds}")
        return type(cls.__name__, (cls,), {"read_timeout": float(seconds)})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Closed like an idle keep-alive connection unless it sends something; uvicorn cancels this on data.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # their_state stays IDLE until h11 has parsed a whole request head.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.read_timeout, self._head_timed_out)
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        log.info("%s: request head not received within %g s; closing the connection",
                 "%s:%d" % self.client if self.client else "a client", self.read_timeout)
        # Raw bytes: h11 cannot send a response to a request it has not parsed yet.
        body = json.dumps({"detail": f"request headers not received within {self.read_timeout:g} s"}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()
