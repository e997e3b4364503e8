"""ASGI middlewares: refuse bodies over a size limit unread; guard each request (decode limits,
body deadline, one-line errors, memory handed back)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flash.core.data.decode_limits import PixelBudget, decode_limits
from flash.core.utils.cpu import return_freed_memory

logger = logging.getLogger("uvicorn.error")  # server events, beside uvicorn's own, at its log level


class BodyTooLargeError(HTTPException):
    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, too_large_message(max_body_bytes))


def too_large_message(max_body_bytes: int) -> str:
    return (
        f"The request body is larger than the server's limit of {max_body_bytes} bytes; "
        "send fewer or smaller inputs per request."
    )


class BodySizeLimit:
    """Answer 413 when a body is over ``max_body_bytes``.

    A ``Content-Length`` over the limit is refused before any of the body is read; a body sent
    without one (chunked) is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _send_413(send, self.max_body_bytes)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError(self.max_body_bytes)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, max_body_bytes: int) -> None:
    await send_json(send, 413, {"detail": too_large_message(max_body_bytes)})


class BodyTimeoutError(HTTPException):
    def __init__(self, body_timeout: float) -> None:
        super().__init__(
            408,
            f"The request body did not arrive within the server's limit of {body_timeout:g} s "
            "(body_timeout); send it faster or in smaller requests.",
            headers={"Connection": "close"},
        )


TRIM_AFTER_PIXELS = 4_000_000
"""A request that decoded at least this many pixels hands freed memory back to the system after it."""
TRIM_WHEN_IDLE_S = 0.5
"""Otherwise freed memory goes back once the server has had no request in flight for this long."""


class RequestGuard:
    """Per request: decode limits, a deadline for the body, and no tracebacks or plain-text 500s.

    - Image decoding inside the request runs under ``max_image_pixels`` and ``max_request_pixels``
      (see :mod:`flash.core.data.decode_limits`), with ``budget`` shared by all requests.
    - The whole body must arrive within ``body_timeout`` seconds of the headers; else 408.
    - A client that hangs up before its body arrived logs one line.
    - Any other exception answers a JSON 500 with ``Connection: close`` and logs one line (the
      traceback at DEBUG level).
    - Freed memory is handed back to the system (``return_freed_memory``; the server owns its
      process) after a request that decoded many pixels, and when the server falls idle.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_image_pixels: int,
        max_request_pixels: int | None,
        body_timeout: float,
        budget: PixelBudget | None = None,
    ) -> None:
        self.app = app
        self.max_image_pixels = max_image_pixels
        self.max_request_pixels = max_request_pixels
        self.body_timeout = body_timeout
        self.budget = budget
        self._in_flight = 0
        self._trim_pending = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        body_done = False
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                logger.info(
                    "%s: the request body did not arrive within %g s (body_timeout).",
                    _who(scope),
                    self.body_timeout,
                )
                raise BodyTimeoutError(self.body_timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        self._in_flight += 1
        with decode_limits(self.max_image_pixels, self.max_request_pixels, self.budget) as limits:
            try:
                await self.app(scope, timed_receive, tracking_send)
            except ClientDisconnect:
                logger.info("%s hung up before its request body arrived.", _who(scope))
            except Exception as error:
                logger.error("%s failed: %s: %s", _who(scope), type(error).__name__, _short(error))
                logger.debug("Traceback of the failure", exc_info=True)
                if not response_started:
                    await send_json(
                        send,
                        500,
                        {"detail": f"The server failed to answer this request ({type(error).__name__})."},
                        close=True,
                    )
            finally:
                self._in_flight -= 1
        if limits.decoded_pixels >= TRIM_AFTER_PIXELS:
            await asyncio.to_thread(return_freed_memory)
        elif self._in_flight == 0 and not self._trim_pending:
            self._trim_pending = True
            loop.call_later(TRIM_WHEN_IDLE_S, self._trim_if_idle, loop)

    def _trim_if_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim_pending = False
        if self._in_flight == 0:
            loop.run_in_executor(None, return_freed_memory)


def _who(scope: Scope) -> str:
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "a client"
    return f"{scope.get('method', '')} {scope.get('path', '')} from {peer}"


def _short(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def send_json(send: Send, status: int, payload: Any, close: bool = False) -> None:
    """Send a whole JSON response through the ASGI ``send`` (with ``Connection: close`` if asked)."""
    body = json.dumps(payload).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
