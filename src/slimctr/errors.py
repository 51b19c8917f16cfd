"""The one exception type for mistakes a user can fix (bad input, bad option, bad path)."""


class SlimctrError(Exception):
    """A user error. The CLI prints it as one line, `slimctr: error: <message>`, and exits 1.

    Messages say what is wrong, where (file and line, column or key) and, when it helps, how to fix
    it, e.g. ``"non-numeric value 'abc' in numeric column I3, data.csv, line 12"``.
    """
