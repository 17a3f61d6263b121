"""Names of the tiny test-model families (kept torch-free for cheap validation)."""

TINY_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3")
