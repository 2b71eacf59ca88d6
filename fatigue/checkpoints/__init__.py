"""Checkpoint files: what a checkpoint holds (schema) and how it is written and read (store)."""
