"""Semantic segmentation: ``SemanticSegmentationData`` and ``SemanticSegmentation``."""

from flash.image.segmentation.data import SemanticSegmentationData, colour_mask_to_indices, read_mask
from flash.image.segmentation.model import SemanticSegmentation, mask_from_json, mask_to_json

__all__ = [
    "SemanticSegmentation",
    "SemanticSegmentationData",
    "colour_mask_to_indices",
    "mask_from_json",
    "mask_to_json",
    "read_mask",
]
