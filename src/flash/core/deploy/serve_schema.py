"""The JSON shapes of the serving API, as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

INPUT_DESCRIPTIONS = {
    "image": "the base64 of an image file's bytes (JPEG, PNG, ...)",
    "text": "a string",
    "tabular": "an object mapping each column name to its value",
}


def input_description(domain: str) -> str:
    return INPUT_DESCRIPTIONS.get(domain, "one input the task accepts")


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
    domain: str = Field(..., examples=["image"])
    labels: list[Any] | None = Field(None, description="The class names, for a classifier.")


def request_body_schema(domain: str, accepts_files: bool) -> dict[str, Any]:
    """The ``requestBody`` of ``POST /predict`` (JSON, and multipart uploads where files make sense)."""
    json_schema = PredictRequest.model_json_schema()
    json_schema["properties"]["inputs"]["description"] = (
        f"The items to predict, each {input_description(domain)}."
    )
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if accepts_files:
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One image file per item, predicted in upload order.",
                    }
                },
                "required": ["files"],
            }
        }
    return {"required": True, "content": content}
