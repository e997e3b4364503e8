"""``TextPreprocessing``: the token limit and tokenizer a text task's inputs go through."""

from __future__ import annotations

from dataclasses import dataclass

from flash.core.model.preprocessing import Preprocessing
from flash.core.utils.validation import check_int


@dataclass(frozen=True, eq=False)
class TextPreprocessing(Preprocessing):
    """What a text task's ``forward`` expects: token ids of at most ``max_length`` tokens, made by
    the tokenizer of the backbone ``tokenizer_name`` (a name or a Hugging Face id or folder)."""

    max_length: int
    tokenizer_name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_length", check_int(self.max_length, "max_length", 2))
        if not isinstance(self.tokenizer_name, str) or not self.tokenizer_name:
            raise ValueError(f"tokenizer_name must name a backbone, got {self.tokenizer_name!r}.")
