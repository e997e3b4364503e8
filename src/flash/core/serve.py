"""Public import path of :mod:`flash.core.deploy.serve` (the very same module object)."""

import sys

from flash.core.utils.extras import require_extra

require_extra("serve", "Serving a model")
from flash.core.deploy import serve as _module  # noqa: E402

sys.modules[__name__] = _module
