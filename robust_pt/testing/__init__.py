"""Tiny models and processors built from configs, for tests, examples and make targets
(never used by the library itself)."""
