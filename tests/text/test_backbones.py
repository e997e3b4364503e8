"""Loading a text backbone silences transformers only while flash loads, then puts the
caller's logging and progress-bar settings back."""

from __future__ import annotations

import importlib
import logging

import pytest
import transformers
from transformers.utils import logging as hf_logging

from flash.text.backbones import DEFAULT_BACKBONE, TEXT_BACKBONES, load_tokenizer

hub_bars = importlib.import_module("huggingface_hub.utils.tqdm")


@pytest.fixture
def chatty_transformers():
    """The user's own choice: transformers at INFO with bars on, one hub bar group off."""
    logger = logging.getLogger("transformers")
    level, bars, states = (
        logger.level,
        hf_logging.is_progress_bar_enabled(),
        dict(hub_bars.progress_bar_states),
    )
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    hub_bars.disable_progress_bars("huggingface_hub.http_get")
    yield dict(hub_bars.progress_bar_states)
    logger.setLevel(level)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    hub_bars.progress_bar_states.clear()
    hub_bars.progress_bar_states.update(states)


def test_building_a_backbone_restores_transformers_logging_and_bars(chatty_transformers, monkeypatch):
    during = []
    from_pretrained = transformers.AutoModel.from_pretrained

    def watched(*args, **kwargs):
        during.append((hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()))
        return from_pretrained(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", watched)
    TEXT_BACKBONES.build(DEFAULT_BACKBONE)
    assert during == [(logging.ERROR, False)]  # quiet while flash loads the weights ...
    assert hf_logging.get_verbosity() == logging.INFO  # ... and the user's settings afterwards
    assert hf_logging.is_progress_bar_enabled()
    assert hub_bars.progress_bar_states == chatty_transformers


def test_loading_a_tokenizer_restores_transformers_logging(chatty_transformers):
    load_tokenizer(DEFAULT_BACKBONE)
    assert hf_logging.get_verbosity() == logging.INFO and hf_logging.is_progress_bar_enabled()
    assert hub_bars.progress_bar_states == chatty_transformers


def test_settings_are_restored_when_loading_fails(chatty_transformers, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="model_type"):
        TEXT_BACKBONES.build(str(tmp_path))
    assert hf_logging.get_verbosity() == logging.INFO and hf_logging.is_progress_bar_enabled()
    assert hub_bars.progress_bar_states == chatty_transformers
