"""Secrets in storage URLs: shown hidden, and scrubbed from any message that might echo them.

A URL with one ``@`` and no ``/ ? #`` before it has a clear user info, whose password is hidden;
query parameters whose names look secret are hidden too. Any other ``@`` (a password with ``@``
unencoded, an ``@`` in a query value) makes it unclear where the secret ends, so everything after
the scheme is hidden. Both functions work on the raw text: they never depend on a URL parser.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote

SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
HIDDEN = "***"
MIN_FRAGMENT = 3  # pieces of a password this long or longer are scrubbed on their own too


def is_ambiguous(url: str) -> bool:
    """Whether it is unclear which part of ``url`` is its user info."""
    after = url.partition("://")[2]
    return after.count("@") > 1 or ("@" in after and any(c in after.split("@", 1)[0] for c in "/?#"))


def split_user_info(url: str) -> tuple[str, str | None, str | None, str]:
    """``scheme://user:password@rest`` as (scheme, user, password, rest); None where absent."""
    scheme, separator, after = url.partition("://")
    if not separator:
        return "", None, None, url
    user_info, at, rest = after.rpartition("@")
    if not at:
        return scheme, None, None, after
    user, colon, password = user_info.partition(":")
    return scheme, user, password if colon else None, rest


def redact(url: str) -> str:
    """The URL with its password and any secret-named query value hidden, for logs, errors and reports."""
    scheme, user, password, rest = split_user_info(url)
    if not scheme:
        return url  # a journal path
    if is_ambiguous(url):
        return f"{scheme}://{HIDDEN}"
    shown = "" if user is None else f"{user}:{HIDDEN}@" if password is not None else f"{user}@"
    base, question, query = rest.partition("?")
    if question:
        query = "&".join(_hide_query_item(item) for item in query.split("&"))
    return f"{scheme}://{shown}{base}{question}{query}"


def secrets_of(url: str) -> set[str]:
    """Every secret ``url`` holds, in every form a message could show it (of an unclear URL: all of it)."""
    _, _, password, rest = split_user_info(url)
    raw = {password} if password else set()
    if is_ambiguous(url):
        raw.add(url.partition("://")[2])
    _, _, query = rest.partition("?")
    for item in query.split("&"):
        key, equals, value = item.partition("=")
        if equals and value and SECRET_QUERY_KEY.search(key):
            raw.add(value)
    forms: set[str] = set()
    for secret in raw:
        for form in (secret, unquote(secret)):
            forms.update({form, quote(form, safe=""), quote_plus(form)})
            forms.update(p for p in re.split(r"[@:/?#%&=]", form) if len(p) >= MIN_FRAGMENT)
    return {f for f in forms if f}


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with every secret of ``url``, and every long piece of one, hidden."""
    text = text.replace(url, redact(url))
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def _hide_query_item(item: str) -> str:
    key, equals, _ = item.partition("=")
    return f"{key}={HIDDEN}" if equals and SECRET_QUERY_KEY.search(key) else item
