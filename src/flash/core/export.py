"""Public import path of :mod:`flash.core.deploy.export` (the very same module object)."""

import sys

from flash.core.deploy import export as _module

sys.modules[__name__] = _module
