"""Simulated peers of the bridge: VAIC (AC Bot API client), the Cognigy VG endpoint, scenarios."""

from __future__ import annotations
