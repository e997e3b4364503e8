"""Lightning Flash 0.8's request body, accepted by ``POST /predict`` beside flash's own.

Flash 0.8 clients send ``{"session": "...", "payload": {"inputs": {"data": <one input>}}}`` and
read ``{"session": "...", "result": {"outputs": <prediction>}}``. The input is what the task's
``decode_serve_input`` reads (base64 of an image, a text, ...); the prediction is the first field
of flash's prediction object (the label, by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class LegacyRequest:
    """One Lightning Flash 0.8 request: its session id and its single input."""

    session: Any
    inputs: list[Any]

    def response(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        """Flash 0.8's answer shape for ``predictions`` (one object, from :meth:`Task.serve_predictions`)."""
        first = predictions[0] if predictions else {}
        outputs = next(iter(first.values())) if isinstance(first, dict) and first else first
        return {"session": self.session, "result": {"outputs": outputs}}


class LegacyRequestError(ValueError):
    """A body in Lightning Flash 0.8's shape that lacks ``payload.inputs.data``."""


def legacy_request(body: bytes) -> LegacyRequest | None:
    """The request if ``body`` is a JSON object in Lightning Flash 0.8's shape (it has ``"payload"``
    and no ``"inputs"``); ``None`` for anything else, which flash's own parsing then reports on.

    Raises:
        LegacyRequestError: the body has Flash 0.8's ``payload`` but not ``payload.inputs.data``.
    """
    if b'"payload"' not in body:
        return None
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or "payload" not in payload or "inputs" in payload:
        return None
    inner = payload["payload"]
    inputs = inner.get("inputs") if isinstance(inner, dict) else None
    if not isinstance(inputs, dict) or "data" not in inputs:
        raise LegacyRequestError(
            'A Lightning Flash 0.8 body is {"session": ..., "payload": {"inputs": {"data": <one input>}}}; '
            'this one has no payload.inputs.data. Or send flash\'s own {"inputs": [...]}.'
        )
    return LegacyRequest(payload.get("session"), [inputs["data"]])
