"""Typed Flyte tasks: thin wrappers over `autoe2e.pipeline` stages (no logic of their own)."""

import logging

from tasks import shutdown

# Task pods and `pyflyte run` do not configure the library's logger; without this the progress
# lines of prepare/train/evaluate (and quarantine warnings) would be invisible in task logs.
_library_log = logging.getLogger("autoe2e")
if not _library_log.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _library_log.addHandler(_handler)
    _library_log.setLevel(logging.INFO)
    _library_log.propagate = False

shutdown.install()
