"""The one exception type that the CLI turns into a one-line message and exit status 2, and the
one-line form of any exception."""


class UserError(Exception):
    """Bad input or environment the user can fix: unknown space, missing data, bad storage URL."""


def one_line(text: str) -> str:
    """``text`` as one printable line: line breaks, carriage returns and other control characters
    (which a file's content can carry into a message) are shown escaped, never acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(error: BaseException) -> str:
    """An exception's message in one line (its type name when it has none), for one-line errors."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
