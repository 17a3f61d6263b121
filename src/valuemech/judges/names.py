"""The judges' names (kept import-free so that the CLI can list them cheaply)."""

JUDGES = ("lexicon", "embedding", "llm", "lm", "self", "learned", "ensemble", "random")
