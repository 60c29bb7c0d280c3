"""Developer tools for acvg-bridge's observability: dashboard generator and test helpers."""
