"""The migration console: a page served by the bridge to watch and steer the migration.

`add_console_routes(app)` registers the page and its admin-only data endpoints (`server.py`);
`view.py` renders what the page shows from the counts of `figures.py`, `history.py` keeps the last
hour, `steering.py` changes a route's percentage or kill switch through the reload path and
audits it. Across a fleet, `fleet.py` applies the others' steering and `exchange.py` shares the
figures and divergences, so any instance's console shows the whole fleet.
"""

from __future__ import annotations

from bridge.console.server import add_console_routes

__all__ = ["add_console_routes"]
