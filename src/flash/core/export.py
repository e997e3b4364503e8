"""Public import path of :mod:`flash.core.deploy.export` (the very same module object)."""

import sys

from flash.core.utils.extras import require_extra

require_extra("export", "ONNX export")
from flash.core.deploy import export as _module  # noqa: E402

sys.modules[__name__] = _module
