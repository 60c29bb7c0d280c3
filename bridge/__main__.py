"""`python -m bridge` runs the command line."""

from __future__ import annotations

from bridge.cli import main

raise SystemExit(main())
