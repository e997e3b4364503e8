"""``ImagePreprocessing``: the crop size, normalisation and resizing an image backbone expects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flash.core.model.preprocessing import Preprocessing
from flash.core.utils.validation import check_int, check_number

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True, eq=False)
class ImagePreprocessing(Preprocessing):
    """What an image task's ``forward`` expects of its input.

    Args:
        image_size: side of the square crop the network sees (pixels, >= 8).
        mean, std: per-channel normalisation of pixel values scaled to [0, 1].
        crop_pct: evaluation crops take the centre ``image_size`` of the image resized so its
            short side is ``image_size / crop_pct``.
        interpolation: ``"bilinear"`` or ``"bicubic"``.
    """

    image_size: int = 224
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", check_int(self.image_size, "image_size", 8, "pixels"))
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or (name == "std" and min(values) <= 0):
                positive = ", all > 0" if name == "std" else ""
                raise ValueError(f"{name} must be one number per channel{positive}, got {values!r}.")
            object.__setattr__(self, name, values)
        object.__setattr__(self, "crop_pct", check_number(self.crop_pct, "crop_pct", "(0, 1]"))
        interpolation = "bicubic" if str(self.interpolation).endswith("bicubic") else str(self.interpolation)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}."
            )
        object.__setattr__(self, "interpolation", interpolation)
