"""The migration console: a page served by the bridge to watch and steer the migration.

`add_console_routes(app)` registers the page and its admin-only data endpoints (`server.py`);
`view.py` renders what the page shows, `history.py` keeps the last hour, `steering.py` changes a
route's percentage or kill switch through the reload path and audits it.
"""

from __future__ import annotations

from bridge.console.server import add_console_routes

__all__ = ["add_console_routes"]
