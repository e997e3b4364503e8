"""Tokenize once, pad per batch: token ids stored unpadded, padded to each batch's longest text."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class TruncationWarning(UserWarning):
    """Some texts were longer than ``max_length`` tokens and were cut."""


def tokenize(texts: Sequence[str], tokenizer: Any, max_length: int, what: str = "") -> list[np.ndarray]:
    """Token ids of every text (special tokens included), cut to ``max_length``, unpadded.

    Texts longer than ``max_length`` are truncated (a :class:`TruncationWarning` says how many).
    """
    if not texts:
        return []
    encoded = tokenizer(
        list(texts),
        truncation=False,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )["input_ids"]
    cut = sum(len(ids) > max_length for ids in encoded)
    if cut:
        where = f" of the {what} data" if what else ""
        warnings.warn(
            f"{cut} of {len(encoded)} texts{where} are longer than max_length={max_length} tokens; "
            "they are truncated (raise max_length to keep more of them).",
            TruncationWarning,
            stacklevel=2,
        )
    special = set(tokenizer.all_special_ids)
    return [_truncate(ids, max_length, special) for ids in encoded]


def _truncate(ids: list[int], max_length: int, special: set[int]) -> np.ndarray:
    if len(ids) <= max_length:
        return np.asarray(ids, dtype=np.int64)
    # keep the closing special token (e.g. [SEP]) the model was trained to see last
    last = ids[-1] if ids[-1] in special else None
    kept = [*ids[: max_length - 1], last] if last is not None else ids[:max_length]
    return np.asarray(kept, dtype=np.int64)


class TokenizedTexts(Dataset):
    """Token ids (and targets) as ``{"input": ids, "target": ...}`` items, in a chosen order.

    Args:
        ids: the token ids of each text.
        targets: one target per text, or ``None``.
        order: which text item ``i`` is (default: the given order). Evaluation sorts by length so
            each batch pads little; the order does not change any metric.
    """

    def __init__(
        self, ids: list[np.ndarray], targets: np.ndarray | None = None, order: Sequence[int] | None = None
    ) -> None:
        self.ids = ids
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.order = np.arange(len(ids)) if order is None else np.asarray(order, dtype=np.int64)
        self.lengths = np.asarray([len(self.ids[i]) for i in self.order], dtype=np.int64)

    @classmethod
    def sorted_by_length(cls, ids: list[np.ndarray], targets: np.ndarray | None = None) -> TokenizedTexts:
        lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
        return cls(ids, targets, np.argsort(lengths, kind="stable"))

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        source = int(self.order[index])
        item: dict[str, Any] = {"input": self.ids[source]}
        if self.targets is not None:
            item["target"] = self.targets[source]
        return item


class PadCollate:
    """Pad a batch of token-id items to its longest one: ``{"input": {"input_ids", "attention_mask"}}``."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "input": pad_batch([item["input"] for item in items], self.pad_token_id),
            **({"target": torch.stack([item["target"] for item in items])} if "target" in items[0] else {}),
        }


def pad_batch(sequences: Sequence[np.ndarray], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Token-id arrays -> ``input_ids`` and ``attention_mask`` padded on the right to the longest."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
