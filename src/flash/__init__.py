"""flash: finetune pretrained models on small data sets, on PyTorch Lightning."""

__version__ = "0.1.0"

from flash.core.trainer import Trainer


def download_data(url: str, path: str = "data/", **kwargs):
    """Download ``url`` (http, https or file) into ``path`` and extract archives; see :mod:`flash.core.download`."""
    from flash.core.download import download_data as _download_data

    return _download_data(url, path, **kwargs)


__all__ = ["Trainer", "__version__", "download_data"]
