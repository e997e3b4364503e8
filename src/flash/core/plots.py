"""Public import path of :mod:`flash.core.utils.plots` (the very same module object)."""

import sys

from flash.core.utils import plots as _module

sys.modules[__name__] = _module
