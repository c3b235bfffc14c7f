"""Exceptions raised for bad user input.

Every message names the offending file or field and says how to fix it; callers catch these to print
the message without a traceback (see :mod:`wsss.cli`).
"""


class WSSSError(Exception):
    """Base class of the errors that are the user's to fix (data, config, files)."""


class DataError(WSSSError, ValueError):
    """A dataset file or folder is missing, unreadable or holds invalid values."""


class ConfigError(WSSSError, ValueError):
    """A configuration field has an invalid value or names a missing file."""


class StageMissingError(WSSSError, RuntimeError):
    """A pipeline stage's inputs are missing (run the earlier stage first)."""


class StaleOutputsError(WSSSError, RuntimeError):
    """A stage's output folder holds files made from other settings than the current run's."""
