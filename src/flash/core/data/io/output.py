"""Lightning Flash's import path of ``Output`` and ``PredsOutput``; see :mod:`flash.core.model.outputs`."""

from flash.core.model.outputs import Output, PredsOutput

__all__ = ["Output", "PredsOutput"]
