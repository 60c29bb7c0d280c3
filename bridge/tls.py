"""The TLS client context for upstream connections (legacy HTTPS, Voice Gateway wss).

Built once from the config's `tls` section: certificates verified against the system trust store
by default, or against `ca_file` (which then replaces the system store); `verify: false` turns
verification off and is logged as insecure every time a context is built.
"""

from __future__ import annotations

import logging
import ssl

from bridge.config import TlsSettings
from bridge.errors import ConfigError

__all__ = ["build_ssl_context"]

log = logging.getLogger("bridge.tls")


def build_ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    """The client context for upstreams; ConfigError (`tls.ca_file`) if the bundle is unusable."""
    if not settings.verify:
        log.warning(
            "INSECURE: tls.verify is false: upstream TLS certificates and host names are NOT "
            "checked; anyone on the network path can impersonate the bots"
        )
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    except FileNotFoundError:
        raise ConfigError("tls.ca_file", "file not found") from None
    except OSError as exc:  # ssl.SSLError is an OSError: not PEM, no certificate in it
        reason = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError("tls.ca_file", f"not a usable CA bundle ({reason})") from None
