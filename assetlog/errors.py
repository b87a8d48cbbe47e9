"""Errors a user can cause or fix.

The CLI prints an `AssetlogError` as one line and exits non-zero; anything else
is a bug and keeps its traceback.
"""


class AssetlogError(Exception):
    """A problem the user can fix; the message says what and how."""

    exit_code = 1


class ConfigError(AssetlogError):
    """Configuration is missing or malformed."""

    exit_code = 2
