"""Deprecated: ``vrnnkit.render`` is now ``vrnnkit.io.render``; this alias will be removed."""

import sys

from vrnnkit.errors import moved_module

sys.modules[__name__] = moved_module(__name__, "vrnnkit.io.render")
