"""valuemech: intrinsic vs. prompted value expression in chat LLMs, end to end."""

__version__ = "0.1.0"
