"""The JSON shapes of the serving API, as pydantic models (they make the OpenAPI schema), and the
reading of a ``POST /predict`` body against them.

A body is ``{"inputs": [...]}``, or ``{"instances": [...]}`` as KServe v1 and Vertex AI clients
send it, or Lightning Flash 0.8's ``{"session", "payload"}`` (:mod:`flash.core.deploy.serve_legacy`).
Refusals are :class:`RequestError` (FastAPI's ``HTTPException``, answered as ``{"detail": "..."}``),
with a message that names the field and says what to send.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError, from_json

from flash.core.deploy.serve_legacy import LegacyRequest, is_legacy_body

INPUT_FIELDS = ("inputs", "instances")
"""The names a request's list of inputs may have: flash's own, and KServe v1's / Vertex AI's."""


class RequestError(HTTPException):
    """A request the server refuses: its HTTP status and a message saying what is wrong."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.status = status
        self.message = message


class PredictRequest(BaseModel):
    """``{"inputs": [...]}`` or ``{"instances": [...]}``: one entry per item to predict."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] | None = Field(None, min_length=1, description="The items to predict, in order.")
    instances: list[Any] | None = Field(
        None, min_length=1, description="The same as \"inputs\", under KServe v1's and Vertex AI's name."
    )

    @model_validator(mode="after")
    def _one_list(self, info: ValidationInfo) -> PredictRequest:
        given = [name for name in INPUT_FIELDS if name in self.model_fields_set]
        if len(given) != 1:
            found = "both" if given else "neither"
            raise PydanticCustomError(
                "input_field", f'The body must hold "inputs" (or "instances"); it has {found}.'
            )
        name = given[0]
        values = getattr(self, name)
        if values is None:
            raise PydanticCustomError("input_field", f'"{name}" must be a list, got null.')
        limit = (info.context or {}).get("max_inputs")
        if limit is not None and len(values) > limit:
            raise PydanticCustomError(
                "too_many_inputs",
                f'"{name}" holds {len(values)} items; the server takes at most {limit} per request.',
            )
        return self

    @property
    def field(self) -> str:
        """The name the inputs came under: ``"inputs"`` or ``"instances"``."""
        return "inputs" if self.inputs is not None else "instances"

    @property
    def items(self) -> list[Any]:
        """The inputs, whichever field holds them."""
        return self.inputs if self.inputs is not None else list(self.instances or [])


def read_predict_body(body: bytes, max_inputs: int, description: str) -> PredictRequest | LegacyRequest:
    """A JSON ``POST /predict`` body, validated against :class:`PredictRequest` (or Flash 0.8's body).

    Raises:
        RequestError: 400 for a body that is empty or not JSON, 422 for the wrong shape; the
            message names the field and says what to send (``description``: what one input is).
    """
    example = f'{{"inputs": [...]}} where each input is {description}'
    if not body.strip():
        raise RequestError(400, f"The request body is empty; send JSON {example}.")
    try:
        payload = from_json(body)
    except ValueError as error:  # also numbers too long to read, and invalid UTF-8
        if "recursion limit" in str(error):
            raise RequestError(
                400, f"The request body nests JSON too deeply to read; send {example}."
            ) from None
        raise RequestError(400, f"The request body is not valid JSON ({error}); send {example}.") from None
    try:
        if is_legacy_body(payload):
            return LegacyRequest.model_validate(payload)
        return PredictRequest.model_validate(payload, context={"max_inputs": max_inputs})
    except ValidationError as error:
        if is_legacy_body(payload):
            raise RequestError(422, LegacyRequest.shape_message()) from None
        raise RequestError(422, _shape_message(error, payload, example)) from None


def _shape_message(error: ValidationError, payload: Any, example: str) -> str:
    """One sentence for what pydantic found wrong with a body, naming the field."""
    problems = error.errors(include_url=False)
    unknown = [str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden"]
    if unknown:
        return (
            f"Unknown field(s) {', '.join(map(repr, unknown))}; the body holds only "
            '"inputs" (or "instances").'
        )
    problem = problems[0]
    field = ".".join(map(str, problem["loc"]))
    if problem["type"] == "model_type":
        return f"The body must be a JSON object {example}; got {_json_type(payload)}."
    if problem["type"] == "list_type":
        return f'"{field}" must be a list, got {_json_type(problem["input"])}; send {example}.'
    if problem["type"] == "too_short":
        return f'"{field}" is empty; send at least one input.'
    if problem["type"] == "input_field":
        return f"{problem['msg']} Send {example}."
    if problem["type"] == "too_many_inputs":
        return str(problem["msg"])
    return f'"{field}": {problem["msg"]}; send {example}.' if field else f"{problem['msg']}; send {example}."


def _json_type(value: Any) -> str:
    """``value``'s JSON type with its article: ``"a list"``, ``"an object"``, ``"null"``."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), f"a {type(value).__name__}")


class ClassPrediction(BaseModel):
    label: Any = Field(
        ..., description="The predicted class (a list of classes for a multi-label task).", examples=["ants"]
    )
    probabilities: dict[str, float] = Field(
        ..., description="Every class's probability.", examples=[{"ants": 0.93, "bees": 0.07}]
    )


class ValuePrediction(BaseModel):
    value: float | list[float] = Field(..., description="The predicted value (a list for several targets).")


class PredictResponse(BaseModel):
    predictions: list[ClassPrediction | ValuePrediction] = Field(
        ..., description="One prediction per input, in input order."
    )


class ErrorResponse(BaseModel):
    """FastAPI's error shape: ``{"detail": "..."}``."""

    detail: str = Field(..., description="What is wrong with the request, and what to send instead.")


class HealthResponse(BaseModel):
    status: str = Field(..., examples=["ok"])
    task: str = Field(..., description="The task class.", examples=["ImageClassifier"])
    domain: str = Field(..., description="The task family (its `domain`).")
    labels: list[Any] | None = Field(None, description="The class names, for a classifier.")


def request_body_schema(task: Any, max_inputs: int | None = None) -> dict[str, Any]:
    """The ``requestBody`` of ``POST /predict`` for ``task``: JSON, and multipart uploads where
    the task takes files (its ``accepts_files``)."""
    json_schema = PredictRequest.model_json_schema()
    for name in INPUT_FIELDS:
        field = json_schema["properties"][name]
        array = next(option for option in field.pop("anyOf") if option.get("type") == "array")
        field.update(array)
        field.pop("default", None)
        if task.input_schema:
            field["items"] = dict(task.input_schema)
        if max_inputs is not None:
            field["maxItems"] = max_inputs
    json_schema["properties"]["inputs"]["description"] = (
        f"The items to predict, each {task.input_description}."
    )
    json_schema["oneOf"] = [{"required": [name]} for name in INPUT_FIELDS]
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if task.accepts_files:
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One file per item, predicted in upload order.",
                    }
                },
                "required": ["files"],
            }
        }
    return {"required": True, "content": content}
