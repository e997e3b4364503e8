"""Backbone registries: one place that maps a name to a pretrained network."""

from __future__ import annotations

import warnings
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

    Args:
        domain: what the backbones take (used in messages).
        fallback: ``fallback(name, pretrained=..., **kwargs) -> Backbone`` for names that are not
            registered (e.g. any model of a library), or ``None`` to accept registered names only.
        offline_hint: a sentence added to the "could not build" error, on how to work offline.
    """

    def __init__(
        self, domain: str, fallback: Callable[..., Backbone] | None = None, offline_hint: str = ""
    ) -> None:
        self.domain = domain
        self._entries: dict[str, _Entry] = {}
        self._fallback = fallback
        self._offline_hint = offline_hint

    def register(self, name: str, *, offline: bool = False, description: str = "") -> Callable:
        """Decorator that registers ``factory`` under ``name``.

        Registering a name that is already registered replaces its factory, with a warning (two
        packages defining the same name would otherwise silently shadow each other).
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"A backbone name must be a non-empty string, got {name!r}.")

        def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
            if not callable(factory):
                raise TypeError(f"The factory of backbone {name!r} must be callable, got {factory!r}.")
            if name in self._entries:
                warnings.warn(
                    f"{self.domain} backbone {name!r} is already registered "
                    f"({self._entries[name].description or 'no description'}); the new factory "
                    f"{getattr(factory, '__qualname__', factory)!r} replaces it.",
                    UserWarning,
                    stacklevel=2,
                )
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
        """Build backbone ``name``: a registered one, else whatever the fallback makes of the name.

        Raises:
            ValueError: ``name`` is not a name, or unknown and there is no fallback.
            RuntimeError: the weights could not be read or downloaded (no network, not cached);
                the message names the backbone and the backbones that work offline.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"backbone must be a name, got {name!r}. Known: {', '.join(self.available())}.")
        if name in self._entries:
            factory, unavailable = self._entries[name].factory, (OSError, ConnectionError)
        elif self._fallback is None:
            raise ValueError(
                f"Unknown {self.domain} backbone {name!r}. Choose one of {', '.join(self.available())}."
            )
        else:
            factory = lambda **options: self._fallback(name, **options)  # noqa: E731
            unavailable = (OSError, ConnectionError, RuntimeError)
        try:
            return factory(pretrained=pretrained, **kwargs)
        except unavailable as error:
            hint = f" {self._offline_hint}" if self._offline_hint else ""
            raise RuntimeError(
                f"Could not build {self.domain} backbone {name!r}"
                f"{' with pretrained weights' if pretrained else ''}: {_first_line(error)}. "
                f"Backbones that work offline: {', '.join(self.offline())}.{hint}"
            ) from error


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:300].rstrip(".") if lines else "") or type(error).__name__
