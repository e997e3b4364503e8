"""Serve a task over HTTP: FastAPI + uvicorn, with dynamic batching of concurrent requests.

Endpoints:

- ``GET /health``: 200 with the task's name, domain and classes once the model is loaded.
- ``POST /predict``: JSON ``{"inputs": [...]}`` (or ``{"instances": [...]}``, as KServe v1 and
  Vertex AI clients send it), each input as the task's ``decode_serve_input`` reads it (its
  ``input_description`` says what it is), or a multipart upload of files for tasks that take
  files (``accepts_files``; each file's bytes go to ``decode_serve_file``). Answers
  ``{"predictions": [...]}`` in input order: one object per item from the task's
  ``serve_predictions`` (``{"label", "probabilities"}`` for a classifier, ``{"value"}`` for a
  regressor).
- ``GET /openapi.json`` and ``GET /docs``: the OpenAPI schema and its interactive page.

Errors are FastAPI's ``{"detail": "..."}``: 400 body not JSON, 408 body not arrived within
``body_timeout``, 413 body over ``max_body_bytes`` (refused before it is read), 415 unsupported
upload, 422 wrong shape (checked against :class:`~flash.core.deploy.serve_schema.PredictRequest`),
an input the task cannot read or an image over ``max_image_pixels`` / ``max_request_pixels``,
503 queue full, too many connections or shutting down (with ``Retry-After``), 500 a failure inside
the model or the server (with ``Connection: close``, logged as one line).

Hostile clients: image sizes are checked before decoding (:mod:`flash.core.data.decode_limits`),
request headers must arrive within ``header_timeout`` and open connections stay under
``max_connections`` (:mod:`flash.core.deploy.serve_connections`). The limits and their defaults
are :class:`~flash.core.deploy.serve_options.ServeOptions`.

Entry points: :func:`serve` (blocking; what ``task.serve()`` and ``flash serve`` call),
:func:`build_app` (the ASGI app, for tests or another ASGI server) and :func:`start_server`
(a server in a background thread, stopped by ``.stop()`` or a ``with`` block).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
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

from flash.core.data.decode_limits import PixelBudget
from flash.core.deploy.serve_batching import BatchPredictor, ServerBusyError, ServerStoppingError
from flash.core.deploy.serve_connections import ACCEPT_BACKLOG, default_max_connections, guarded_h11_protocol
from flash.core.deploy.serve_legacy import LegacyRequest
from flash.core.deploy.serve_limits import BodySizeLimit, RequestGuard
from flash.core.deploy.serve_options import RETRY_AFTER_S, ServeOptions
from flash.core.deploy.serve_schema import (
    ErrorResponse,
    HealthResponse,
    PredictResponse,
    RequestError,
    read_predict_body,
    request_body_schema,
)
from flash.core.model.outputs import serve_kind
from flash.core.utils.progress import is_quiet, set_quiet

logger = logging.getLogger(__name__)

__all__ = ["RequestError", "RunningServer", "ServeOptions", "build_app", "serve", "start_server"]


def _unavailable(message: str) -> RequestError:
    """A 503 with ``Retry-After``: the server is busy or stopping, not refusing the request itself."""
    return RequestError(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


# -- the app --------------------------------------------------------------------------------------
def build_app(task: Any, *, device: str | None = None, output: Any = None, **options: Any) -> FastAPI:
    """The FastAPI app serving ``task`` (a loaded flash task, or a checkpoint path).

    Args:
        task: the task, or the path of a flash checkpoint.
        device: where the model runs: ``"auto"`` (a GPU when there is one), ``"cpu"`` or
            ``"gpu"``; default: a checkpoint loads as ``"auto"``, a task stays where it is.
        output: what each prediction holds: one of the task's ``outputs`` or an ``Output`` of
            :mod:`flash.core.classification`; default: the task's ``serve_outputs``.
        **options: the limits, by name, as :class:`~flash.core.deploy.serve_options.ServeOptions`
            lists them (``max_body_bytes``, ``max_batch_size``, ``max_wait_ms``,
            ``max_queue_size``, ``max_inputs_per_request``, ``max_image_pixels``,
            ``max_request_pixels``, ``body_timeout``; ``header_timeout`` and ``max_connections``
            act only where flash runs the server).
    """
    limits = ServeOptions.from_kwargs(options)
    task = _resolve_task(task, device)
    # serve_kind refuses now, not per request, what the task cannot give (e.g. "set" unfitted)
    kinds = None if output is None else (serve_kind(task, output),)

    task.eval()
    predictor = BatchPredictor(
        lambda items: task.serve_predictions(items, limits.max_batch_size, kinds),
        max_batch_size=limits.max_batch_size,
        max_wait_s=limits.max_wait_ms / 1000,
        max_queue_size=limits.max_queue_size,
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
    app.state.options = limits
    app.add_middleware(BodySizeLimit, max_body_bytes=limits.max_body_bytes)
    app.add_middleware(  # outermost: sees every failure of the app
        RequestGuard,
        max_image_pixels=limits.max_image_pixels,
        max_request_pixels=limits.max_request_pixels,
        body_timeout=limits.body_timeout,
        budget=PixelBudget(limits.max_image_pixels),
    )

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
    async def health() -> Any:
        if not predictor.running:
            raise _unavailable("The model is not running.")
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
            (503, "Too many requests waiting or connections open, or shutting down; see Retry-After."),
        )
    }

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=error_responses,
        openapi_extra={"requestBody": request_body_schema(task, limits.max_inputs_per_request)},
    )
    async def predict(request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        flash08: LegacyRequest | None = None
        if content_type == "multipart/form-data":
            if not accepts_files:
                raise RequestError(
                    415,
                    f"A {type(task).__name__} takes JSON, not file uploads: send "
                    f'{{"inputs": [...]}} where each input is {task.input_description}.',
                )
            files = await _uploaded_files(request, limits.max_inputs_per_request)
            items = await asyncio.to_thread(_decode_files, task, files)
        else:
            body = await request.body()
            items, flash08 = await asyncio.to_thread(_read_json, task, body, limits.max_inputs_per_request)
        try:
            predictions = await predictor.predict(items)
        except (ServerBusyError, ServerStoppingError) as error:
            raise _unavailable(str(error)) from error
        except (ValueError, TypeError) as error:
            raise RequestError(422, f"The model could not use these inputs: {error}") from error
        except Exception as error:
            logger.error("Prediction failed inside the model: %s: %s", type(error).__name__, error)
            logger.debug("Traceback of the failed prediction", exc_info=True)
            raise RequestError(
                500, f"Prediction failed inside the model: {type(error).__name__}.", {"Connection": "close"}
            ) from error
        return JSONResponse(flash08.response(predictions) if flash08 else {"predictions": predictions})

    return app


# -- request parsing ------------------------------------------------------------------------------
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


def _read_json(task: Any, body: bytes, max_inputs: int) -> tuple[list[Any], LegacyRequest | None]:
    """A JSON body's inputs decoded by the task (off the event loop: large bodies take a while),
    and the Flash 0.8 request when the body was one."""
    request = read_predict_body(body, max_inputs, task.input_description)
    items = []
    for index, value in enumerate(request.items):
        try:
            items.append(task.decode_serve_input(value))
        except (ValueError, TypeError) as error:
            raise RequestError(422, f"{request.field}[{index}]: {error}") from None
    return items, request if isinstance(request, LegacyRequest) else None


def _decode_files(task: Any, files: list[tuple[bytes, str]]) -> list[Any]:
    items = []
    for index, (data, name) in enumerate(files):
        try:
            items.append(task.decode_serve_file(data, name))
        except (ValueError, TypeError) as error:
            raise RequestError(422, f"files[{index}] ({name}): {error}") from None
    return items


# -- running --------------------------------------------------------------------------------------
def serve(
    task_or_checkpoint_path: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    device: str | None = None,
    output: Any = None,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve a task (or a checkpoint path) at ``http://host:port`` until Ctrl-C (SIGINT) or SIGTERM.

    Prints the address once the server accepts requests, and a line when it stops. In-flight
    requests are finished before it returns. ``device``, ``output`` and the limits
    (``**options``: ``max_batch_size``, ``max_queue_size``, ``header_timeout``,
    ``max_connections``, ...) as :func:`build_app` and
    :class:`~flash.core.deploy.serve_options.ServeOptions` describe them. ``host="0.0.0.0"``
    listens on every interface.
    """
    sock = _bind(host, port)  # a taken port fails before the model loads
    try:
        app = build_app(task_or_checkpoint_path, device=device, output=output, **options)
        config = _uvicorn_config(app, log_level=log_level, timeout_graceful_shutdown=10)
    except BaseException:
        sock.close()
        raise
    name = type(app.state.task).__name__
    server = _announcing_server(
        config, f"Serving {name} at {_url(host, port)} (docs at /docs); Ctrl-C to stop"
    )
    was_quiet = is_quiet()
    set_quiet(True)  # a server logs requests, not progress bars of each batch
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    finally:
        sock.close()
        set_quiet(was_quiet)
    if server.started:
        print(f"Stopped serving {name}.", file=sys.stderr, flush=True)


def _announcing_server(config: Any, line: str) -> Any:
    """A uvicorn server that prints ``line`` to the terminal once it accepts connections (uvicorn
    names no address when it is handed a socket, and logs only at its log level)."""

    class AnnouncingServer(_uvicorn().Server):  # type: ignore[misc]
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(line, file=sys.stderr, flush=True)

    return AnnouncingServer(config)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
        return _url(self.host, self.port)

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
    **app_options: Any,
) -> RunningServer:
    """Start serving in a background thread and return once it accepts requests.

    ``port=0`` picks a free port (see ``.url``). Other options as :func:`serve`.
    """
    sock = _bind(host, port)
    try:
        app = build_app(task_or_checkpoint_path, **app_options)
        config = _uvicorn_config(app, log_level=log_level, log_config=None, access_log=False)
    except BaseException:
        sock.close()
        raise
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


def _uvicorn_config(app: FastAPI, **config: Any) -> Any:
    """uvicorn's config with the connection guards of :mod:`flash.core.deploy.serve_connections`."""
    limits: ServeOptions = app.state.options
    max_connections = limits.max_connections or default_max_connections()
    protocol = guarded_h11_protocol(limits.header_timeout, max_connections)
    return _uvicorn().Config(app, http=protocol, backlog=ACCEPT_BACKLOG, **config)


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

        return load_task(task, device=device or "auto")
    if not isinstance(task, torch.nn.Module) or not hasattr(task, "serve_predictions"):
        raise TypeError(f"Serve a flash task or the path of its checkpoint, got {type(task).__name__}.")
    return task if device is None else task.to(resolve_device(device))
