"""Public import path of :mod:`flash.core.data.download` (the very same module object)."""

import sys

from flash.core.data import download as _module

sys.modules[__name__] = _module
