"""The error hierarchy raised by pure code; the transport turns each into a status or close code.

Performs no I/O.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class AudioCodesProtocolError(BridgeError):
    """A VAIC request the AudioCodes Bot API does not allow.

    `status` is the HTTP status to answer with, `reason` the bounded label counted in
    `acvg_rejected_requests_total` (`bad_request`, `not_found`, `too_large`, `auth`, ...).
    """

    def __init__(self, message: str, *, status: int = 400, reason: str = "bad_request") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class CallMoved(BridgeError):
    """The call was handed off to the fleet while a request for it waited here: the request is
    served wherever the call went, never by the stale copy left on this instance."""


class VoiceGatewayProtocolError(BridgeError):
    """A frame from the jambonz app that the feature-server role cannot accept."""


class MappingError(BridgeError):
    """A mapping file is invalid: names the file, the field path inside it and the reason."""

    def __init__(self, file: str, path: str, reason: str) -> None:
        super().__init__(f"{file}: {path}: {reason}")
        self.file = file
        self.path = path
        self.reason = reason


class ConfigError(BridgeError):
    """A configuration file is invalid: names the field path and the reason."""

    def __init__(self, path: str, reason: str, *, file: str | None = None) -> None:
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{path}: {reason}")
        self.file = file
        self.path = path
        self.reason = reason
