"""The JSON shapes of the serving API, as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """``{"inputs": [...]}``: one entry per item to predict."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] = Field(..., min_length=1, description="The items to predict, in order.")


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
    error: str = Field(..., description="What is wrong with the request.")


class HealthResponse(BaseModel):
    status: str = Field(..., examples=["ok"])
    task: str = Field(..., description="The task class.", examples=["ImageClassifier"])
    domain: str = Field(..., description="The task family (its `domain`).")
    labels: list[Any] | None = Field(None, description="The class names, for a classifier.")


def request_body_schema(task: Any) -> dict[str, Any]:
    """The ``requestBody`` of ``POST /predict`` for ``task``: JSON, and multipart uploads where
    the task takes files (its ``accepts_files``)."""
    json_schema = PredictRequest.model_json_schema()
    inputs = json_schema["properties"]["inputs"]
    inputs["description"] = f"The items to predict, each {task.input_description}."
    if task.input_schema:
        inputs["items"] = dict(task.input_schema)
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
