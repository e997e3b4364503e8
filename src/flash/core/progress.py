"""Public import path of :mod:`flash.core.utils.progress` (the very same module object)."""

import sys

from flash.core.utils import progress as _module

sys.modules[__name__] = _module
