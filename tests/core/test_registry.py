"""BackboneRegistry: names, duplicates, and the error when weights cannot be had."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

from flash.core.model.registry import Backbone, BackboneRegistry


def _tiny(pretrained: bool = True) -> Backbone:
    layer = nn.Linear(2, 2)
    return Backbone(layer, 2, [layer])


def test_registering_a_name_twice_warns_and_the_new_factory_wins():
    registry = BackboneRegistry("toy")
    registry.register("tiny", description="first")(_tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a first registration is silent
        registry.register("other")(_tiny)

    def replacement(pretrained: bool = True) -> Backbone:
        layer = nn.Linear(2, 3)
        return Backbone(layer, 3, [layer])

    with pytest.warns(UserWarning, match=r"toy backbone 'tiny' is already registered \(first\)"):
        registry.register("tiny", description="second")(replacement)
    assert registry.build("tiny").num_features == 3
    assert registry.available() == ["tiny", "other"]


def test_register_refuses_a_name_that_is_not_one():
    registry = BackboneRegistry("toy")
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register("  ")
    with pytest.raises(TypeError, match="must be callable"):
        registry.register("x")(42)


def test_unreadable_weights_name_the_backbone_and_the_offline_ones():
    registry = BackboneRegistry("toy", offline_hint="Try a folder.")
    registry.register("shipped", offline=True)(_tiny)

    @registry.register("downloaded")
    def downloaded(pretrained: bool = True) -> Backbone:
        raise ConnectionError("no route to host.")

    with pytest.raises(RuntimeError) as raised:
        registry.build("downloaded")
    assert str(raised.value) == (
        "Could not build toy backbone 'downloaded' with pretrained weights: no route to host. "
        "Backbones that work offline: shipped. Try a folder."
    )
