"""The one exception type that the CLI turns into a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input or environment the user can fix: unknown space, missing data, bad storage URL."""
