"""Lightning Flash 0.8's request body, accepted by ``POST /predict`` beside flash's own.

Flash 0.8 clients send ``{"session": "...", "payload": {"inputs": {"data": <one input>}}}`` and
read ``{"session": "...", "result": {"outputs": <prediction>}}``. The input is what the task's
``decode_serve_input`` reads (base64 of an image, a text, ...); the prediction is the first field
of flash's prediction object (the label, by default).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel


class _LegacyInputs(BaseModel):
    data: Any


class _LegacyPayload(BaseModel):
    inputs: _LegacyInputs


class LegacyRequest(BaseModel):
    """One Lightning Flash 0.8 request: its session id and its single input."""

    session: Any = None
    payload: _LegacyPayload

    field: ClassVar[str] = "inputs"
    """The name its input goes by in error messages (``inputs[0]``)."""

    @property
    def items(self) -> list[Any]:
        """The request's one input, as a list."""
        return [self.payload.inputs.data]

    def response(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        """Flash 0.8's answer shape for ``predictions`` (one object, from :meth:`Task.serve_predictions`)."""
        first = predictions[0] if predictions else {}
        outputs = next(iter(first.values())) if isinstance(first, dict) and first else first
        return {"session": self.session, "result": {"outputs": outputs}}

    @staticmethod
    def shape_message() -> str:
        """What a Flash 0.8 body must hold (the message of a 422 for one that does not)."""
        return (
            'A Lightning Flash 0.8 body is {"session": ..., "payload": {"inputs": {"data": <one input>}}}; '
            'this one has no payload.inputs.data. Or send flash\'s own {"inputs": [...]}.'
        )


def is_legacy_body(payload: Any) -> bool:
    """Whether a parsed JSON body is in Lightning Flash 0.8's shape: an object with ``"payload"``
    and without flash's ``"inputs"`` (or ``"instances"``)."""
    return (
        isinstance(payload, dict)
        and "payload" in payload
        and "inputs" not in payload
        and "instances" not in payload
    )
