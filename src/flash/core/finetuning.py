"""Public import path of :mod:`flash.core.training.finetuning` (the very same module object)."""

import sys

from flash.core.training import finetuning as _module

sys.modules[__name__] = _module
