"""A task's preprocessing as a typed value: what its inputs must look like before ``forward``.

Each domain defines a dataclass on :class:`Preprocessing` (image size and normalisation, token
limit, ...). A task keeps one as ``task.preprocessing``; data modules read it in Lightning's
``setup`` hook; checkpoints and export metadata store :meth:`Preprocessing.to_dict`, plain JSON
values, which :meth:`Preprocessing.from_dict` reads back (old checkpoints stored the same dict).

It is also a read-only mapping of those values (``task.preprocessing["image_size"]``), so code
written against the dict form keeps working.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

P = TypeVar("P", bound="Preprocessing")


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessing(Mapping):
    """Base of every domain's preprocessing dataclass: immutable, JSON-ready, comparable with dicts."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (tuples become lists), in field order."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[P], values: Mapping[str, Any]) -> P:
        """Rebuild from :meth:`to_dict`'s output (a checkpoint's or export's), ignoring keys this
        version does not know and taking defaults for keys it lacks.

        Raises:
            TypeError: when ``values`` is not a mapping; ValueError: for a field without default
                that is missing.
        """
        if isinstance(values, cls):
            return values
        if not isinstance(values, Mapping):
            raise TypeError(
                f"{cls.__name__}.from_dict needs a dict of its fields, got {type(values).__name__}."
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        required = [
            name
            for name, f in known.items()
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and name not in values
        ]
        if required:
            raise ValueError(
                f"{cls.__name__} needs {', '.join(required)}; got only {', '.join(map(str, values))}."
            )
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self: P, **changes: Any) -> P:
        """A copy with ``changes`` applied (checked like the constructor's arguments)."""
        return dataclasses.replace(self, **changes)

    # -- the read-only mapping of to_dict() -------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        values = self.to_dict()
        if key not in values:
            raise KeyError(key)
        return values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(f.name for f in dataclasses.fields(self))

    def __len__(self) -> int:
        return len(dataclasses.fields(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (equal to a dict, so not hashable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    json.dumps(value)  # raises TypeError for a value a checkpoint or export could not keep
    return value
