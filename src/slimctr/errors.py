"""The one exception type for mistakes a user can fix (bad input, bad option, bad path)."""

SHOWN_CHARACTERS = 80  # longer values are cut in the middle when a message quotes them


class SlimctrError(Exception):
    """A user error. The CLI prints it as one line, `slimctr: error: <message>`, and exits 1.

    Messages say what is wrong, where (file and line, column or key) and, when it helps, how to fix
    it, e.g. ``"non-numeric value 'abc' in numeric column I3, data.csv, line 12"``. Values that come
    from the user's data (column names, cell values) are quoted with ``shown``.
    """


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """``repr(value)`` for a message, cut in the middle when longer than ``limit`` characters.

    Control characters come out escaped, so a message stays one line.

    >>> shown("a" * 200, limit=20)
    "'aaaaaaa...(202 characters)...aaaaaaa'"
    >>> print(shown("line\\nbreak"))
    'line\\nbreak'
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    keep = (limit - 4) // 2
    return f"{text[:keep]}...({len(text)} characters)...{text[-keep:]}"
