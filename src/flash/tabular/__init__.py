"""Tabular classification and regression: tables in, tabular networks trained from scratch."""

from flash.tabular.backbones import TABULAR_BACKBONES
from flash.tabular.data import TabularClassificationData, TabularData, TabularRegressionData
from flash.tabular.frames import FieldInferenceWarning
from flash.tabular.model import TabularClassifier, TabularRegressor
from flash.tabular.preprocessing import TabularPreprocessor

__all__ = [
    "TABULAR_BACKBONES",
    "FieldInferenceWarning",
    "TabularClassificationData",
    "TabularClassifier",
    "TabularData",
    "TabularPreprocessor",
    "TabularRegressionData",
    "TabularRegressor",
]
