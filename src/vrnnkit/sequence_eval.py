"""Deprecated: ``vrnnkit.sequence_eval`` is now ``vrnnkit.evaluation.sequences``; this alias will be removed."""

import sys

from vrnnkit.errors import moved_module

sys.modules[__name__] = moved_module(__name__, "vrnnkit.evaluation.sequences")
