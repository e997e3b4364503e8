"""Backbone registries: one place that maps a name to a pretrained network."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class Backbone:
    """A built backbone.

    Attributes:
        module: the network, returning pooled features of width ``num_features``.
        num_features: width of the features the head receives.
        blocks: submodules of ``module`` from input to output (stages, transformer layers).
        preprocessing: what inputs must look like (image size, mean, std; tokenizer; ...).
    """

    module: nn.Module
    num_features: int
    blocks: Sequence[nn.Module]
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Entry:
    factory: Callable[..., Backbone]
    offline: bool
    description: str


class BackboneRegistry:
    """Named backbone factories of one domain, plus a fallback for names from other libraries.

    ``factory(pretrained: bool, **kwargs) -> Backbone``. ``offline`` marks backbones whose
    pretrained weights ship in an installed package.
    """

    def __init__(self, domain: str, fallback: Callable[..., Backbone] | None = None) -> None:
        self.domain = domain
        self._entries: dict[str, _Entry] = {}
        self._fallback = fallback

    def register(self, name: str, *, offline: bool = False, description: str = "") -> Callable:
        def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
            self._entries[name] = _Entry(factory, offline, description)
            return factory

        return decorator

    def available(self) -> list[str]:
        return list(self._entries)

    def offline(self) -> list[str]:
        return [name for name, entry in self._entries.items() if entry.offline]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "offline": entry.offline, "description": entry.description}
            for name, entry in self._entries.items()
        ]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def build(self, name: str, pretrained: bool = True, **kwargs: Any) -> Backbone:
        if not isinstance(name, str) or not name:
            raise ValueError(f"backbone must be a name, got {name!r}. Known: {', '.join(self.available())}.")
        if name in self._entries:
            return self._entries[name].factory(pretrained=pretrained, **kwargs)
        if self._fallback is None:
            raise ValueError(
                f"Unknown {self.domain} backbone {name!r}. Choose one of {', '.join(self.available())}."
            )
        try:
            return self._fallback(name, pretrained=pretrained, **kwargs)
        except (OSError, ConnectionError, RuntimeError) as error:
            raise RuntimeError(
                f"Could not build {self.domain} backbone {name!r}"
                f"{' with pretrained weights' if pretrained else ''}: {str(error).splitlines()[0][:300]}. "
                f"Backbones that work offline: {', '.join(self.offline())}."
            ) from error
