"""Benchmarks: figures for the docs, never pass/fail in the test suite."""
