"""Static helpers for checking PromQL against what the bridge exports (no PromQL parser here:
syntax is promtool's job, these only find the metric names an expression selects)."""

from __future__ import annotations

import re
import shutil

from prometheus_client import CollectorRegistry

# Debian's `prometheus` package ships both binaries; CI installs it (see README).
INSTALL_HINT = "install Debian's `prometheus` package (apt-get install prometheus)"

# Grafana variables a panel may use, replaced by values that keep the query valid PromQL.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$route": ".+",
    "$role": "primary|shadow",
}

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?[smhdwy]*)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def binary(name: str) -> str:
    """The path of `promtool` or `prometheus`, or a RuntimeError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"`{name}` is not on PATH: {INSTALL_HINT}")
    return path


def substitute_grafana_variables(expr: str) -> str:
    """A panel query with its Grafana variables replaced, so promtool can parse it."""
    for variable in sorted(GRAFANA_SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_SUBSTITUTIONS[variable])
    return expr


def selected_metrics(expr: str) -> frozenset[str]:
    """Metric names a (syntactically valid) PromQL expression selects."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGES.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group()
        if text[match.end() :].lstrip().startswith("(") or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return frozenset(names)


def exported_series(registry: CollectorRegistry) -> frozenset[str]:
    """Every series name the registry's metrics can expose, by metric type."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return frozenset(names)
