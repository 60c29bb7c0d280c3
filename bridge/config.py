"""The configuration file: schema, `${ENV}` substitution, validation with clear errors.

Performs no network I/O; `load_config` reads one file. Unknown keys and contradictions are
errors that name the field path (design §2.3).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import phonenumbers
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.errors import ConfigError
from bridge.journal import JournalSettings
from bridge.rollout_config import Plan

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoiceGatewayReconnect(_Strict):
    """Reconnecting a call's socket that dropped mid-call (the URL's `#rc=` can lower it)."""

    max_retries: int = Field(default=5, ge=0, le=10)  # connection attempts per call; 0: none
    initial_backoff_ms: int = Field(default=500, ge=10, le=10_000)  # doubles to 2 s, then +2 s


class VoiceGatewayUpstream(_Strict):
    url: str
    connect_timeout_ms: int = Field(default=1500, ge=100, le=60_000)
    reconnect: VoiceGatewayReconnect = Field(default_factory=VoiceGatewayReconnect)

    @field_validator("url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws:// or wss:// URL")
        return value


class LegacyUpstream(_Strict):
    url: str
    token: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class MatchRule(_Strict):
    caller_country: list[str] | None = None
    caller_prefix: list[str] | None = None
    callee_prefix: list[str] | None = None


class Rule(_Strict):
    match: MatchRule
    path: Literal["legacy", "voicegateway"]


class Migration(_Strict):
    voicegateway_percent: float = Field(default=0, ge=0, le=100)
    sticky_key: Literal["caller", "callee", "conversation"] = "caller"
    shadow: bool = False
    # Shadows give way to primaries when the bridge's core is busier than this share (bridge/
    # budget.py); None: shadows are never shed for load.
    shadow_max_cpu: float | None = Field(default=None, gt=0, le=1)
    force: Literal["legacy", "voicegateway"] | None = None
    rules: list[Rule] = Field(default_factory=list)
    # A caller gone within this long of the start is an `early_hangup` (bridge/kpi.py).
    early_hangup_s: float = Field(default=5.0, ge=0, le=600)
    # Steps voicegateway_percent by itself on voice KPIs (design §2.7, bridge/rollout.py).
    plan: Plan | None = None

    @model_validator(mode="after")
    def _plan_fits(self) -> Migration:
        gates = self.plan.gates if self.plan is not None else None
        if gates is not None and gates.node_match_rate is not None and not self.shadow:
            raise ValueError(
                "plan.gates.node_match_rate needs migration.shadow: true (the shadow "
                "comparisons are what it judges)"
            )
        return self


class Route(_Strict):
    token: str = Field(min_length=1)
    async_mode: bool = False
    default_region: str | None = None
    expires_seconds: int = Field(default=120, ge=10, le=86_400)
    turn_settle_ms: int = Field(default=300, ge=0, le=60_000)
    turn_timeout_ms: int = Field(default=4000, ge=50, le=120_000)
    input_hook: str = Field(default="voice", min_length=1)
    unmapped: Literal["drop", "fail"] = "drop"
    sip_headers: dict[str, str] = Field(default_factory=dict)
    max_activities: int = Field(default=50, ge=1, le=10_000)
    # Spoken (a `message` activity) before the hangup when the call cannot be served.
    apology: str | None = Field(default=None, min_length=1)
    # Live conversations on this route; a create beyond it is refused with 503 over_capacity.
    max_calls: int = Field(default=1000, ge=1, le=1_000_000)
    # Requests per conversation per second (token bucket, burst of one second's worth);
    # beyond it HTTP answers 429 rate_limited and WebSocket mode drops the frame.
    max_requests_per_second: int = Field(default=20, ge=1, le=10_000)
    voicegateway: VoiceGatewayUpstream | None = None
    legacy: LegacyUpstream | None = None
    migration: Migration = Field(default_factory=Migration)
    record: JournalSettings | None = None  # design §2.6: the journal of sampled calls
    # Set by `acvg-bridge replay` on the route it plays against: its calls carry the replay
    # marker (docs/journal.md, "Replay"), so flows can skip real side effects.
    replay: bool = False

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r} (ISO 3166-1 alpha-2, e.g. DE)")
        return region

    @model_validator(mode="after")
    def _consistent(self) -> Route:
        if self.voicegateway is None and self.legacy is None:
            raise ValueError("a route needs at least one upstream: voicegateway or legacy")
        if self.turn_settle_ms >= self.turn_timeout_ms:
            raise ValueError("turn_settle_ms must be below turn_timeout_ms")
        mig = self.migration
        if self.voicegateway is None:
            if mig.voicegateway_percent > 0 or mig.force == "voicegateway" or mig.shadow:
                raise ValueError(
                    "migration asks for the voicegateway path but the route has no voicegateway"
                )
            if any(rule.path == "voicegateway" for rule in mig.rules):
                raise ValueError("a migration rule sends calls to voicegateway, which is not set")
            if mig.plan is not None:
                raise ValueError("migration.plan moves calls to voicegateway, which is not set")
        if self.legacy is None:
            if mig.shadow:
                raise ValueError("migration.shadow needs both a legacy and a voicegateway upstream")
            if mig.force == "legacy" or any(rule.path == "legacy" for rule in mig.rules):
                raise ValueError("migration sends calls to legacy, which is not set")
            if 0 < mig.voicegateway_percent < 100:
                raise ValueError(
                    "voicegateway_percent below 100 needs a legacy upstream for the rest"
                )
            if mig.plan is not None:
                raise ValueError(
                    "migration.plan needs a legacy upstream (its calls are the baseline and "
                    "where a rollback sends them)"
                )
        return self

    @property
    def single_path(self) -> Literal["legacy", "voicegateway"] | None:
        """The only path this route can serve, when it has a single upstream."""
        if self.legacy is None:
            return "voicegateway"
        if self.voicegateway is None:
            return "legacy"
        return None


class DivergenceLogSettings(_Strict):
    path: str | None = None  # JSON Lines file; None keeps divergences in memory only
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)


class TlsSettings(_Strict):
    """TLS toward upstreams (legacy https://, Voice Gateway wss://)."""

    ca_file: str | None = None  # PEM CA bundle; replaces the system trust store when set
    verify: bool = True  # false: no certificate or host name checks (logged as insecure)

    @model_validator(mode="after")
    def _consistent(self) -> TlsSettings:
        if self.ca_file is not None and not self.verify:
            raise ValueError("ca_file is set but verify is false; drop one of them")
        return self


class ConsoleSettings(_Strict):
    """Readiness verdict thresholds of the migration console (shown on the page)."""

    min_samples: int = Field(default=20, ge=1)  # comparisons below this: "not enough data"
    ready_match_rate: float = Field(default=0.99, ge=0, le=1)  # at or above: "ready"
    review_match_rate: float = Field(default=0.95, ge=0, le=1)  # below: "needs review", flagged

    @model_validator(mode="after")
    def _ordered(self) -> ConsoleSettings:
        if self.review_match_rate > self.ready_match_rate:
            raise ValueError("review_match_rate must not be above ready_match_rate")
        return self


class ClusterSettings(_Strict):
    """More than one instance (design §2.5): shared state in Redis; null `redis_url` = one
    instance, everything in memory."""

    redis_url: str | None = None
    instance_id: str | None = None  # default: "<hostname>-<pid>"
    advertise_url: str | None = None  # how the other instances reach this one
    lease_s: float = Field(default=10, ge=1, le=300)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("advertise_url")
    @classmethod
    def _advertise_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http:// or https:// URL")
        return None if value is None else value.rstrip("/")

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, value: str | None) -> str | None:
        if value is not None and not _INSTANCE_ID.match(value):
            raise ValueError(f"must match {_INSTANCE_ID.pattern}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> ClusterSettings:
        if self.redis_url is not None and self.advertise_url is None:
            raise ValueError("advertise_url is required with redis_url (peers forward to it)")
        return self


class Config(_Strict):
    listen: str = "127.0.0.1:8080"
    public_url: str | None = None
    admin_token: str | None = None
    mappings: str | None = None
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    # SIGTERM: calls in flight get this long to end on their own, then end cleanly.
    drain_timeout_s: float = Field(default=30, ge=0, le=3600)
    divergence_log: DivergenceLogSettings = Field(default_factory=DivergenceLogSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    routes: dict[str, Route]

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, Route]) -> dict[str, Route]:
        if not value:
            raise ValueError("at least one route is required")
        for name in value:
            if not _ROUTE_NAME.match(name):
                raise ValueError(f"route name {name!r} must match {_ROUTE_NAME.pattern}")
        return value


def parse_listen(value: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 as `[::1]:8080`) and check the port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def substitute_env(text: str, env: dict[str, str] | None = None) -> str:
    """Replace `${NAME}` and `${NAME:-default}`; an unset name without default is an error."""
    environ = os.environ if env is None else env

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"${{{name}}}", "environment variable is not set")

    return _ENV_REF.sub(repl, text)


def parse_config(
    text: str, *, file: str | None = None, env: dict[str, str] | None = None
) -> Config:
    """Parse and validate configuration text; raise ConfigError naming the first problem."""
    try:
        raw: Any = yaml.safe_load(substitute_env(text, env))
    except ConfigError as exc:
        raise ConfigError(exc.path, exc.reason, file=file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        raise ConfigError(
            where, f"invalid YAML: {getattr(exc, 'problem', exc)}", file=file
        ) from None
    except RecursionError:
        raise ConfigError("(document)", "nested too deeply", file=file) from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors fail this way on a tagged value they cannot build
        # (`!!timestamp xyz`, `!!bool maybe`, `!!int abc`)
        raise ConfigError(
            "(document)", f"invalid tagged YAML value (!!timestamp, !!int, ...): {exc}", file=file
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError("(document)", "must be a mapping with a `routes` key", file=file)
    try:
        return Config.model_validate(raw)
    except RecursionError:
        raise ConfigError("(document)", "nested too deeply", file=file) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or "(document)"
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = "unknown key"
        raise ConfigError(path, reason, file=file) from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate a configuration file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read: {exc.strerror}", file=file) from None
    return parse_config(text, file=file, env=env)
