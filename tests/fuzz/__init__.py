"""Fuzzing: hostile-input strategies, the per-surface harness and the seed corpus."""
