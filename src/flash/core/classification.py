"""Lightning Flash's ``flash.core.classification``: the classification task base and the ``Output``
objects that choose what a prediction is (see :mod:`flash.core.model.outputs`)."""

from flash.core.model.classification import ClassificationTask
from flash.core.model.outputs import (
    ClassesOutput,
    LabelsOutput,
    LogitsOutput,
    Output,
    PredsOutput,
    ProbabilitiesOutput,
)

ClassificationOutput = Output
"""Lightning Flash's base class of the classification outputs."""

PredsClassificationOutput = PredsOutput
"""Lightning Flash's name of the logits output of a classifier."""

__all__ = [
    "ClassesOutput",
    "ClassificationOutput",
    "ClassificationTask",
    "LabelsOutput",
    "LogitsOutput",
    "Output",
    "PredsClassificationOutput",
    "PredsOutput",
    "ProbabilitiesOutput",
]
