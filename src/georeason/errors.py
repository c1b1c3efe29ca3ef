"""The one exception type georeason raises for bad input, so the CLI can print it without a trace.

Every message names the file, field or argument at fault and says what was expected.
"""


class GeoreasonError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported option."""
