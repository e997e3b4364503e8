"""Public import path of :mod:`flash.core.deploy.serve` (the very same module object)."""

import sys

from flash.core.deploy import serve as _module

sys.modules[__name__] = _module
