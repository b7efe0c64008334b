"""The one exception type that the CLI turns into a one-line message and exit status 2, and the
one-line form of any exception."""


class UserError(Exception):
    """Bad input or environment the user can fix: unknown space, missing data, bad storage URL."""


def first_line(error: BaseException) -> str:
    """An exception's message in one line (its type name when it has none), for one-line errors."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
