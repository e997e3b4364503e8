"""Lightning Flash's ``DataKeys``: the keys of a batch dict (flash batches use the same names)."""


class DataKeys:
    """Keys of a flash batch: ``batch[DataKeys.INPUT]``, ``batch[DataKeys.TARGET]``."""

    INPUT = "input"
    TARGET = "target"
    PREDS = "preds"
    METADATA = "metadata"


__all__ = ["DataKeys"]
