"""The ``vrnnkit`` command line: a thin layer over ``vrnnkit.api``.

Each command parses its options, calls one API function and prints. ``common`` holds the
app, the consoles and the error handling; ``train``, ``infer``, ``data`` and ``runs`` register their
commands on the app when imported here. Exit codes: 0 success, 2 bad usage (a bad option
value, config file, data file or checkpoint), 1 a failure while running (a non-finite loss, a
full disk), 130 interrupted. Messages go to stderr; a traceback only with ``--debug`` or
``VRNNKIT_DEBUG=1``.
"""

from vrnnkit.cli import data, infer, runs, train
from vrnnkit.cli.common import app, main

__all__ = ["app", "data", "infer", "main", "runs", "train"]
