"""Serve a task over HTTP: FastAPI + uvicorn, with dynamic batching of concurrent requests.

Endpoints:

- ``GET /health``: 200 with the task's name, domain and classes once the model is loaded.
- ``POST /predict``: JSON ``{"inputs": [...]}``, each input as the task's
  ``decode_serve_input`` reads it (its ``input_description`` says what it is), or a multipart
  upload of files for tasks that take files (``accepts_files``). Answers
  ``{"predictions": [...]}`` in input order: one object per item from the task's
  ``serve_predictions`` (``{"label", "probabilities"}`` for a classifier, ``{"value"}`` for a
  regressor).
- ``GET /openapi.json`` and ``GET /docs``: the OpenAPI schema and its interactive page.

Errors are ``{"error": "..."}``: 400 body not JSON, 408 body not arrived within ``body_timeout``,
413 body over ``max_body_bytes`` (refused before it is read), 415 unsupported upload, 422 wrong
shape, an input the task cannot read or an image over ``max_image_pixels`` / ``max_request_pixels``,
503 queue full, too many connections or shutting down, 500 a failure inside the model or the server
(with ``Connection: close``, logged as one line).

Hostile clients: image sizes are checked before decoding (:mod:`flash.core.data.decode_limits`),
request headers must arrive within ``header_timeout`` and open connections stay under
``max_connections`` (:mod:`flash.core.deploy.serve_connections`).

Entry points: :func:`serve` (blocking; what ``task.serve()`` and ``flash serve`` call),
:func:`build_app` (the ASGI app, for tests or another ASGI server) and :func:`start_server`
(a server in a background thread, stopped by ``.stop()`` or a ``with`` block).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from flash.core.data.decode_limits import DEFAULT_MAX_IMAGE_PIXELS, PixelBudget
from flash.core.deploy.serve_batching import BatchPredictor, ServerBusyError, ServerStoppingError
from flash.core.deploy.serve_connections import ACCEPT_BACKLOG, default_max_connections, guarded_h11_protocol
from flash.core.deploy.serve_legacy import LegacyRequestError, legacy_request
from flash.core.deploy.serve_limits import BodySizeLimit, RequestGuard
from flash.core.deploy.serve_schema import (
    ErrorResponse,
    HealthResponse,
    PredictResponse,
    request_body_schema,
)
from flash.core.model.outputs import serve_kind
from flash.core.utils.progress import is_quiet, set_quiet

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_MAX_QUEUE_SIZE = 1024
DEFAULT_MAX_INPUTS_PER_REQUEST = 256
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- the app --------------------------------------------------------------------------------------
def build_app(
    task: Any,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    max_inputs_per_request: int = DEFAULT_MAX_INPUTS_PER_REQUEST,
    device: str | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    output: Any = None,
) -> FastAPI:
    """The FastAPI app serving ``task`` (a loaded flash task, or a checkpoint path).

    Args:
        task: the task, or the path of a flash checkpoint.
        device: where the model runs: ``"auto"`` (a GPU when there is one), ``"cpu"`` or
            ``"gpu"``; default: a checkpoint loads as ``"auto"``, a task stays where it is.
        max_body_bytes: larger request bodies get 413 before they are read.
        max_batch_size: the most inputs one forward pass takes.
        max_wait_ms: how long a request waits for others to share its forward pass.
        max_queue_size: requests allowed to wait for the model; more get 503.
        max_inputs_per_request: more inputs in one request get 422.
        max_image_pixels: an image larger than this (read from its header, after any
            reduced-scale decoding) gets 422 before it is decoded. Also the most pixels
            decoded at once across all requests.
        max_request_pixels: the most pixels one request's images may hold once resized for
            the model; more get 422.
        body_timeout: seconds a request's body may take to arrive; slower ones get 408.
        output: what each prediction holds: one of the task's ``outputs`` or an ``Output`` of
            :mod:`flash.core.classification`; default: the task's ``serve_outputs``.
    """
    task = _resolve_task(task, device)
    kinds = None if output is None else (serve_kind(task, output),)
    _check_positive_int("max_body_bytes", max_body_bytes)
    _check_positive_int("max_batch_size", max_batch_size)
    _check_positive_int("max_queue_size", max_queue_size)
    _check_positive_int("max_inputs_per_request", max_inputs_per_request)
    _check_positive_int("max_image_pixels", max_image_pixels)
    _check_positive_int("max_request_pixels", max_request_pixels)
    _check_seconds("body_timeout", body_timeout)
    if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, int | float) or max_wait_ms < 0:
        raise ValueError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}.")

    task.eval()
    predictor = BatchPredictor(
        lambda items: task.serve_predictions(items, max_batch_size, kinds),
        max_batch_size=max_batch_size,
        max_wait_s=max_wait_ms / 1000,
        max_queue_size=max_queue_size,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await predictor.start()
        try:
            yield
        finally:
            await predictor.stop()

    domain = getattr(task, "domain", "generic")
    accepts_files = bool(task.accepts_files)
    app = FastAPI(
        title=f"flash {type(task).__name__}",
        description=f"Predictions of a finetuned {type(task).__name__}. Each input is {task.input_description}.",
        lifespan=lifespan,
    )
    app.state.task = task
    app.state.predictor = predictor
    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes)
    app.add_middleware(  # outermost: sees every failure of the app
        RequestGuard,
        max_image_pixels=max_image_pixels,
        max_request_pixels=max_request_pixels,
        body_timeout=body_timeout,
        budget=PixelBudget(max_image_pixels),
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        headers = {"Connection": "close"} if error.status == 500 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
    async def health() -> Any:
        if not predictor.running:
            return JSONResponse({"error": "The model is not running."}, status_code=503)
        labels = getattr(task, "labels", None)
        return {"status": "ok", "task": type(task).__name__, "domain": domain, "labels": labels}

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in (
            (400, "The body is not JSON."),
            (408, "The body did not arrive within body_timeout."),
            (413, "The body is over the size limit."),
            (415, "Unsupported content type."),
            (422, "Wrong shape, an input the task cannot read, or images over the pixel limits."),
            (503, "Too many requests waiting or connections open, or shutting down."),
        )
    }

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=error_responses,
        openapi_extra={"requestBody": request_body_schema(task)},
    )
    async def predict(request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            if not accepts_files:
                raise RequestError(
                    415,
                    f"A {type(task).__name__} takes JSON, not file uploads: send "
                    f'{{"inputs": [...]}} where each input is {task.input_description}.',
                )
            files = await _uploaded_files(request, max_inputs_per_request)
            items = await asyncio.to_thread(_decode_files, task, files)
            flash08 = None
        else:
            body = await request.body()
            try:
                flash08 = legacy_request(body)  # Lightning Flash 0.8's {"session", "payload"} body
            except LegacyRequestError as error:
                raise RequestError(422, str(error)) from None
            values = (
                flash08.inputs
                if flash08
                else _inputs_from_json(body, max_inputs_per_request, task.input_description)
            )
            items = await asyncio.to_thread(_decode_all, task, values)
        try:
            predictions = await predictor.predict(items)
        except (ServerBusyError, ServerStoppingError) as error:
            raise RequestError(503, str(error)) from error
        except (ValueError, TypeError) as error:
            raise RequestError(422, f"The model could not use these inputs: {error}") from error
        except Exception as error:
            logger.error("Prediction failed inside the model: %s: %s", type(error).__name__, error)
            logger.debug("Traceback of the failed prediction", exc_info=True)
            raise RequestError(500, f"Prediction failed inside the model: {type(error).__name__}.") from error
        return JSONResponse(flash08.response(predictions) if flash08 else {"predictions": predictions})

    return app


# -- request parsing ------------------------------------------------------------------------------
def _inputs_from_json(body: bytes, max_inputs: int, description: str) -> list[Any]:
    example = f'{{"inputs": [...]}} where each input is {description}'
    if not body:
        raise RequestError(400, f"The request body is empty; send JSON {example}.")
    try:
        payload = json.loads(body)
    except ValueError as error:  # also numbers over Python's 4,300-digit limit
        raise RequestError(400, f"The request body is not valid JSON ({error}); send {example}.") from None
    except RecursionError:
        raise RequestError(400, f"The request body nests JSON too deeply to read; send {example}.") from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"The body must be a JSON object {example}; got a {_json_type(payload)}.")
    if "inputs" not in payload:
        raise RequestError(422, f'The body has no "inputs" field; send {example}.')
    unknown = sorted(set(payload) - {"inputs"})
    if unknown:
        raise RequestError(
            422, f'Unknown field(s) {", ".join(map(repr, unknown))}; the body holds only "inputs".'
        )
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(422, f'"inputs" must be a list, got a {_json_type(inputs)}; send {example}.')
    if not inputs:
        raise RequestError(422, '"inputs" is empty; send at least one input.')
    if len(inputs) > max_inputs:
        raise RequestError(
            422, f'"inputs" holds {len(inputs)} items; the server takes at most {max_inputs} per request.'
        )
    return inputs


async def _uploaded_files(request: Request, max_inputs: int) -> list[tuple[bytes, str]]:
    """The uploaded files' bytes and names, in upload order (handed to the task as bytes)."""
    try:
        form = await request.form(max_files=max_inputs, max_fields=max_inputs)
    except HTTPException:
        raise
    except Exception as error:
        raise RequestError(400, f"The multipart body could not be read: {error}.") from error
    try:
        values: list[tuple[bytes, str]] = []
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise RequestError(422, f"Form field {field!r} is not a file; upload files only.")
            values.append((await value.read(), value.filename or ""))
    finally:
        await form.close()
    if not values:
        raise RequestError(422, "The upload holds no files; attach one file per input as 'files'.")
    return values


def _decode_all(task: Any, values: list[Any]) -> list[Any]:
    items = []
    for index, value in enumerate(values):
        try:
            items.append(task.decode_serve_input(value))
        except (ValueError, TypeError) as error:
            raise RequestError(422, f"inputs[{index}]: {error}") from None
    return items


def _decode_files(task: Any, files: list[tuple[bytes, str]]) -> list[Any]:
    items = []
    for index, (data, name) in enumerate(files):
        try:
            items.append(task.decode_serve_file(data, name))
        except (ValueError, TypeError) as error:
            raise RequestError(422, f"files[{index}] ({name}): {error}") from None
    return items


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# -- running --------------------------------------------------------------------------------------
def serve(
    task_or_checkpoint_path: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    max_inputs_per_request: int = DEFAULT_MAX_INPUTS_PER_REQUEST,
    device: str | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int | None = None,
    log_level: str = "info",
    output: Any = None,
) -> None:
    """Serve a task (or a checkpoint path) at ``http://host:port``; returns after Ctrl-C (SIGINT) or SIGTERM.

    In-flight requests are finished before it returns. See :func:`build_app` for the limits;
    ``header_timeout`` (seconds for a request's headers to arrive) and ``max_connections``
    (open connections; ``None``: below the process's file-descriptor limit) guard the
    connections. ``host="0.0.0.0"`` listens on every interface.
    """
    app = build_app(
        task_or_checkpoint_path,
        max_body_bytes=max_body_bytes,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue_size=max_queue_size,
        max_inputs_per_request=max_inputs_per_request,
        device=device,
        max_image_pixels=max_image_pixels,
        max_request_pixels=max_request_pixels,
        body_timeout=body_timeout,
        output=output,
    )
    config = _uvicorn_config(
        app, header_timeout, max_connections, log_level=log_level, timeout_graceful_shutdown=10
    )
    sock = _bind(host, port)
    server = _uvicorn().Server(config)
    logger.info("Serving %s at http://%s:%d (docs at /docs)", type(app.state.task).__name__, host, port)
    was_quiet = is_quiet()
    set_quiet(True)  # a server logs requests, not progress bars of each batch
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    finally:
        sock.close()
        set_quiet(was_quiet)


class RunningServer:
    """A uvicorn server running in a background thread; ``stop()`` (or leaving ``with``) ends it."""

    def __init__(self, server: Any, thread: threading.Thread, host: str, port: int, app: FastAPI) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.app = app

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    task_or_checkpoint_path: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    startup_timeout: float = 60.0,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int | None = None,
    **app_options: Any,
) -> RunningServer:
    """Start serving in a background thread and return once it accepts requests.

    ``port=0`` picks a free port (see ``.url``). ``header_timeout`` and ``max_connections`` as
    :func:`serve`, other options as :func:`build_app`.
    """
    app = build_app(task_or_checkpoint_path, **app_options)
    config = _uvicorn_config(
        app, header_timeout, max_connections, log_level=log_level, log_config=None, access_log=False
    )
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    server = _uvicorn().Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="flash-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError(f"The server on {host}:{bound_port} failed to start; see the log above.")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"The server on {host}:{bound_port} did not start within {startup_timeout} s.")
        time.sleep(0.01)
    return RunningServer(server, thread, host, bound_port, app)


def _uvicorn() -> Any:
    import uvicorn

    return uvicorn


def _uvicorn_config(app: FastAPI, header_timeout: float, max_connections: int | None, **options: Any) -> Any:
    """uvicorn's config with the connection guards of :mod:`flash.core.deploy.serve_connections`."""
    _check_seconds("header_timeout", header_timeout)
    if max_connections is None:
        max_connections = default_max_connections()
    _check_positive_int("max_connections", max_connections)
    protocol = guarded_h11_protocol(header_timeout, max_connections)
    return _uvicorn().Config(app, http=protocol, backlog=ACCEPT_BACKLOG, **options)


def _bind(host: str, port: int) -> socket.socket:
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be an address such as '127.0.0.1', got {host!r}.")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            f"Cannot listen on {host}:{port} ({error.strerror}); pick another port with port=..."
        ) from error
    sock.set_inheritable(True)
    return sock


def _resolve_task(task: Any, device: str | None) -> Any:
    from flash.core.utils.device import resolve_device

    if isinstance(task, str | os.PathLike):
        from flash.core.deploy.checkpoint import load_task

        return load_task(task).to(resolve_device(device or "auto"))
    if not isinstance(task, torch.nn.Module) or not hasattr(task, "serve_predictions"):
        raise TypeError(f"Serve a flash task or the path of its checkpoint, got {type(task).__name__}.")
    return task if device is None else task.to(resolve_device(device))


def _check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}.")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
