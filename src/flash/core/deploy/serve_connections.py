"""Connection-level guards uvicorn lacks: a deadline for request headers and a cap on open connections.

uvicorn waits for a request's headers without limit and accepts sockets until the process runs
out of file descriptors, so a few hundred slow clients (slowloris) stop it from accepting the
next one, ``/health`` included. The h11 protocol class made here adds:

- ``header_timeout``: a connection must deliver a request's line and headers within this many
  seconds of opening (or of the first byte after a keep-alive pause); else it is closed.
- ``max_connections``: when one more is open, the oldest connection still waiting for headers
  (an idle keep-alive one or a slow client) is closed to make room; if every connection is busy
  with a request, the new one gets a JSON 503 (with ``Retry-After``) and is closed. The default
  stays below the process's file-descriptor limit (:func:`default_max_connections`).

Body reading has its own deadline in :class:`flash.core.deploy.serve_limits.RequestGuard`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from flash.core.deploy.serve_options import RETRY_AFTER_S, check_positive_int, check_seconds

logger = logging.getLogger("uvicorn.error")  # server events, beside uvicorn's own, at its log level

ACCEPT_BACKLOG = 64
"""Sockets the server accepts in one go (and the listen backlog): small bursts let the connection
cap act between them, so the process does not run out of file descriptors mid-burst."""


def default_max_connections() -> int:
    """Open connections allowed by default: the soft file-descriptor limit less a reserve.

    The reserve (an eighth of the limit, at least 64) keeps descriptors for the model's files,
    logging and a burst of accepted sockets not yet counted.
    """
    try:
        import resource
    except ImportError:  # not a Unix: the C runtime's default of 512 open files
        soft = 512
    else:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft <= 0:
            soft = 65536
    return max(1, soft - max(64, soft // 8))


def guarded_h11_protocol(header_timeout: float, max_connections: int) -> type:
    """A uvicorn ``H11Protocol`` subclass enforcing ``header_timeout`` and ``max_connections``.

    Pass it as ``uvicorn.Config(http=...)``; each call makes a class with its own connection
    registry, so two servers in one process do not share a cap.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    check_seconds("header_timeout", header_timeout)
    check_positive_int("max_connections", max_connections)
    open_connections: OrderedDict[Any, None] = OrderedDict()  # oldest first

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            open_connections[self] = None
            self._arm_header_timer()
            if len(open_connections) > max_connections:
                self._make_room()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting_for_headers():
                self._arm_header_timer()
            else:
                self._cancel_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            open_connections.pop(self, None)
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timeout_expired)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout_expired(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                logger.info(
                    "Closed the connection from %s: no complete request headers within %g s (header_timeout).",
                    _peer(self),
                    header_timeout,
                )
                self.transport.close()

        def _make_room(self) -> None:
            for connection in open_connections:
                if connection is not self and connection._waiting_for_headers():
                    logger.info(
                        "Closed the idle connection from %s to make room: %d connections are open "
                        "(max_connections).",
                        _peer(connection),
                        max_connections,
                    )
                    open_connections.pop(connection, None)
                    connection.transport.close()
                    return
            logger.warning(
                "Refused a connection from %s: %d connections are open, all busy (max_connections).",
                _peer(self),
                max_connections,
            )
            open_connections.pop(self, None)
            self.transport.write(_busy_response(max_connections))
            self.transport.close()

    return GuardedH11Protocol


def _peer(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "a client"


def _busy_response(max_connections: int) -> bytes:
    body = json.dumps(
        {"detail": f"The server has {max_connections} connections open, all busy; try again shortly."}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nretry-after: {RETRY_AFTER_S}\r\n\r\n"
    )
    return head.encode("ascii") + body
