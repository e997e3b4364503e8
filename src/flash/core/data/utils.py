"""Lightning Flash's import path of ``download_data`` (``from flash.core.data.utils import download_data``)."""

from flash.core.data.download import download_data

__all__ = ["download_data"]
