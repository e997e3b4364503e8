"""The limits of a served task, with their defaults and checks, in one place.

:func:`flash.core.serve.build_app`, :func:`~flash.core.serve.start_server`,
:func:`~flash.core.serve.serve` and ``flash serve`` all take these options by name; each is read
and checked here once (the CLI mirrors the defaults so that ``flash --help`` stays light; a test
keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flash.core.data.decode_limits import DEFAULT_MAX_IMAGE_PIXELS

RETRY_AFTER_S = 1
"""The ``Retry-After`` (whole seconds) of every 503: queue full, connections all busy, stopping."""


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """A server's limits; build one with :meth:`from_kwargs` to get errors that name the option.

    Attributes:
        max_body_bytes: larger request bodies get 413 before they are read.
        max_batch_size: the most inputs one forward pass takes.
        max_wait_ms: how long a request waits for others to share its forward pass.
        max_queue_size: requests allowed to wait for the model; more get 503.
        max_inputs_per_request: more inputs in one request get 422.
        max_image_pixels: an image larger than this (read from its header, after any
            reduced-scale decoding) gets 422 before it is decoded. Also the most pixels decoded
            at once across all requests.
        max_request_pixels: the most pixels one request's images may hold once resized for the
            model; more get 422.
        body_timeout: seconds a request's body may take to arrive; slower ones get 408.
        header_timeout: seconds a connection may take to send a request's headers; slower ones
            are closed (only where flash runs the server: :func:`serve`, :func:`start_server`).
        max_connections: open connections allowed; ``None``: below the process's
            file-descriptor limit (only where flash runs the server).
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue_size: int = 1024
    max_inputs_per_request: int = 256
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_request_pixels: int = 64_000_000
    body_timeout: float = 60.0
    header_timeout: float = 10.0
    max_connections: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "max_connections" and value is None:
                continue
            if field.name.endswith("_timeout"):
                check_seconds(field.name, value)
            elif field.name == "max_wait_ms":
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                    raise ValueError(f"max_wait_ms must be a number >= 0, got {value!r}.")
            else:
                check_positive_int(field.name, value)

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> ServeOptions:
        """The options given by keyword; an unknown name is a ``TypeError`` listing the known ones."""
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(
                f"Unknown serving option(s) {', '.join(map(repr, unknown))}; the options are "
                f"{', '.join(names)}, plus device and output."
            )
        return cls(**options)


def check_seconds(name: str, value: Any) -> None:
    """``value`` must be a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}.")


def check_positive_int(name: str, value: Any) -> None:
    """``value`` must be a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
