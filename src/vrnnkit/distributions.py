"""Deprecated: ``vrnnkit.distributions`` is now ``vrnnkit.blocks.distributions``; this alias will be removed."""

import sys

from vrnnkit.errors import moved_module

sys.modules[__name__] = moved_module(__name__, "vrnnkit.blocks.distributions")
