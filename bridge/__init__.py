"""acvg-bridge: serve AudioCodes VoiceAI Connect calls from a Cognigy Voice Gateway Endpoint."""

from __future__ import annotations

__version__ = "0.1.0"
