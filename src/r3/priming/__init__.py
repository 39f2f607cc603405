"""Priming data: generated reasoning traces and reflect-retry dialogues for supervised priming."""
