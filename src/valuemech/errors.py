"""The one exception type users see as a one-line error (the CLI prints it, no traceback)."""


class ValuemechError(Exception):
    """A problem with the user's input or environment, stated in one line."""
