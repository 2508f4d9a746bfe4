"""Errors meant for users.

Anything raised as :class:`InputError` (or a subclass) is turned by the CLI into one
line on stderr and exit code 2. Everything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad user input: a missing or malformed file, an invalid option value.

    The message must name the offending argument or file and, where possible, the fix.
    """


class FormatError(InputError):
    """A file exists but is not in a format signgen can read (or is corrupt)."""


class UnsafePickleError(FormatError):
    """A pickle references something outside the restricted allow-list."""


class MissingWeightsError(InputError):
    """A model or checkpoint file that signgen cannot download is absent."""
