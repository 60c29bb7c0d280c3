"""Render a replay report (the dict written to report.json) as one self-contained HTML page.

The page loads nothing: the CSS and a small script are inline, and a Content-Security-Policy
forbids every fetch and every script but that one. It reads fully without the script, which only
adds a node filter to the divergences. Every value taken from the report is HTML-escaped, since it
comes from a journal, which is untrusted input. Pure: no I/O; a missing or ill-typed field shows
as a default (a dash, an empty cell), never raises.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import PurePosixPath
from typing import Any

from bridge.compare import lift

MAX_DIVERGENCES = 1000
_NONE = "\N{EN DASH}"
_PATHS = ("legacy", "voicegateway")
_RESULT_LABELS = {
    "mismatch": "fields differ",
    "missing": "missing in replay",
    "extra": "extra in replay",
}

_CSS = """
:root {
  --bg: #f5f6f8; --panel: #fff; --ink: #1d2330; --muted: #6b7385; --line: #dde1e8;
  --legacy: #4a6fa5; --vg: #e07b24; --ok: #1f8a4c; --warn: #b7791f; --bad: #c53030;
  --diff-bg: #fde2e1; --diff-ink: #9b1c1c; --diff-row: #fff6f5;
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; flex-wrap: wrap; justify-content: space-between; align-items: center;
  gap: 8px 24px; padding: 10px 20px; background: #1d2330; color: #fff; }
header h1 { font-size: 18px; margin: 0; }
header .sub { font-weight: 400; opacity: .7; }
header dl { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0; font-size: 13px; }
header dt { opacity: .7; }
header dd { margin: 0 0 0 4px; }
header div { display: flex; }
header .path-legacy, header .path-voicegateway { padding: 0 6px; border-radius: 3px; color: #fff; }
header .path-legacy { background: var(--legacy); }
header .path-voicegateway { background: var(--vg); }
main { max-width: 1280px; margin: 0 auto; padding: 16px 20px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 12px 16px; margin-bottom: 16px; }
h2 { font-size: 16px; margin: 0 0 8px; }
h3 { font-size: 14px; margin: 0; }
.hint { font-weight: 400; color: var(--muted); font-size: 12px; }
.empty { color: var(--muted); margin: 4px 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
td.num, th.num { text-align: right; }
tr.total td { font-weight: 600; }
.path-legacy { color: var(--legacy); font-weight: 600; }
.path-voicegateway { color: var(--vg); font-weight: 600; }
.figures { display: flex; flex-wrap: wrap; gap: 16px 40px; align-items: flex-end; }
.figure .label { display: block; color: var(--muted); font-size: 12px; }
.figure .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
#match-rate { font-size: 44px; font-weight: 700; line-height: 1; }
.verdict { font-size: 20px; font-weight: 700; padding: 2px 12px; border-radius: 4px; color: #fff;
  background: var(--muted); }
.verdict.ok { background: var(--ok); }
.verdict.bad { background: var(--bad); }
.rate { display: flex; gap: 8px; align-items: center; min-width: 180px; }
.bar { flex: 1; height: 10px; border-radius: 5px; overflow: hidden; background: var(--line); }
.bar span { display: block; height: 100%; background: var(--bad); }
.bar span.ok { background: var(--ok); }
.bar span.warn { background: var(--warn); }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.filters { display: flex; gap: 8px; align-items: center; margin-bottom: 8px; }
.filters select { font: inherit; }
article.call { border-top: 1px solid var(--line); padding: 10px 0 4px; }
article.call > .head { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: baseline;
  margin-bottom: 6px; font-size: 12px; color: var(--muted); }
.turn-note { font-size: 12px; color: var(--muted); margin: 4px 0 8px; }
.divergence { border: 1px solid var(--line); border-radius: 4px; margin-bottom: 10px; }
.divergence > .head { padding: 4px 8px; background: #f0f2f5; font-size: 12px; display: flex;
  flex-wrap: wrap; gap: 4px 16px; }
.divergence > .head .result { font-weight: 600; color: var(--diff-ink); }
.divergence .fields code { color: var(--diff-ink); }
.divergence table { table-layout: fixed; }
.divergence th:first-child { width: 26%; }
.divergence td { font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.divergence td.field { color: #5a3e85; }
.divergence td .kind { font: 11px system-ui, sans-serif; color: var(--diff-ink); margin-left: 6px; }
.divergence tr.diff td { background: var(--diff-row); }
mark.diff { background: var(--diff-bg); color: var(--diff-ink); outline: 1px solid #f5b5b2;
  border-radius: 2px; padding: 0 2px; }
.absent { color: var(--muted); font-style: italic; font-family: system-ui, sans-serif; }
th .absent { color: var(--diff-ink); font-weight: 600; font-style: normal; }
details { padding: 4px 8px; font-size: 12px; }
details .sides { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
pre.json { font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; margin: 4px 0;
  padding: 6px; background: #fafbfc; border: 1px solid var(--line); border-radius: 4px;
  overflow-x: auto; }
.problems { margin: 4px 0; padding-left: 20px; }
.error-text { color: var(--bad); }
"""

_SCRIPT = """
(function () {
  var box = document.getElementById("div-filter");
  var select = document.getElementById("div-node");
  if (!box || !select) return;
  box.hidden = false;
  select.addEventListener("change", function () {
    var node = select.value;
    var items = document.querySelectorAll("#divergences .divergence");
    for (var i = 0; i < items.length; i++) {
      items[i].hidden = node !== "" && items[i].getAttribute("data-node") !== node;
    }
    var calls = document.querySelectorAll("#divergences article.call");
    for (var j = 0; j < calls.length; j++) {
      calls[j].hidden = node !== "" && !calls[j].querySelector(".divergence:not([hidden])");
    }
  });
})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)


def render_html(report: Mapping[str, Any], *, max_divergences: int = MAX_DIVERGENCES) -> str:
    """The report as one HTML page; at most `max_divergences` activities are shown in full."""
    data = _map(report)
    summary = _map(data.get("summary"))
    calls = [_map(c) for c in _list(data.get("calls"))]
    route = _str(data.get("route")) or _NONE
    body = "\n".join(
        [
            _header(data, route),
            "<main>",
            _summary(summary, data, calls),
            _nodes(data, summary),
            _latency(data),
            _divergences(calls, max_divergences),
            _errors(calls, data),
            "</main>",
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>acvg-bridge replay report · {_e(route)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


# --- sections ---------------------------------------------------------------------------------


def _header(data: Mapping[str, Any], route: str) -> str:
    journal = _str(data.get("journal"))
    name = PurePosixPath(journal).name or journal if journal else _NONE
    items = [
        ("replayed against", _path(data.get("path"))),
        ("journal", f'<span title="{_e(journal)}">{_e(name)}</span>'),
        ("when", _e(_str(data.get("started_at")) or _NONE)),
        ("duration", _e(_duration(_num(data.get("seconds"))))),
        ("speed", _e(_speed(_num(data.get("speed"))))),
        ("concurrency", _e(_count(data.get("concurrency")))),
    ]
    meta = "".join(f"<div><dt>{label}</dt><dd>{value}</dd></div>" for label, value in items)
    return (
        "<header>"
        f'<h1>acvg-bridge replay report <span class="sub">route {_e(route)}</span></h1>'
        f'<dl id="meta">{meta}</dl>'
        "</header>"
    )


def _summary(
    summary: Mapping[str, Any], data: Mapping[str, Any], calls: Sequence[Mapping[str, Any]]
) -> str:
    turns, matched = _int(summary.get("turns")), _int(summary.get("turns_matched"))
    rate = _num(summary.get("match_rate"))
    if rate is None and turns and matched is not None:
        rate = matched / turns
    fail_under = _num(summary.get("fail_under"))
    passed = summary.get("passed")
    if not isinstance(passed, bool):
        passed = None if rate is None or fail_under is None else rate >= fail_under
    verdict = {True: ("ok", "PASS"), False: ("bad", "FAIL"), None: ("", "no verdict")}[passed]
    diverged = sum(1 for c in calls if c.get("status") == "diverged")
    recorded = ", ".join(
        f"{_path(path)} {_e(_count(n))}" for path, n in _map(data.get("recorded_paths")).items()
    )
    figures = [
        ("calls", summary.get("calls")),
        ("replayed", summary.get("replayed")),
        ("diverged", diverged),
        ("errors", summary.get("errors")),
        ("skipped", summary.get("skipped")),
        ("bad journal lines", summary.get("problems", len(list(_list(data.get("problems")))))),
        ("turns compared", turns),
        ("turns matched", matched),
    ]
    cells = "".join(
        f'<div class="figure" data-figure="{_e(label)}"><span class="label">{_e(label)}</span>'
        f'<span class="value">{_e(_count(value))}</span></div>'
        for label, value in figures
    )
    return (
        '<section id="summary" class="panel"><h2>Summary</h2><div class="figures">'
        '<div class="figure"><span class="label">match rate</span>'
        f'<span id="match-rate">{_e(_percent(rate))}</span></div>'
        f'<div class="figure"><span class="label">against fail-under {_e(_percent(fail_under))}'
        f'</span><span id="verdict" class="verdict {verdict[0]}">{verdict[1]}</span></div>'
        f"{cells}</div>"
        f'<p class="hint">recorded on: {recorded or _NONE}</p></section>'
    )


def _nodes(data: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    nodes = [_map(n) for n in _list(data.get("nodes"))]
    threshold = _num(summary.get("fail_under"))
    columns = ("activities", "match", "mismatch", "missing", "extra")
    head = "".join(f'<th class="num">{c}</th>' for c in columns)
    rows: list[str] = []
    totals = dict.fromkeys(columns, 0)
    for node in nodes:
        name = _str(node.get("node"))
        for column in columns:
            totals[column] += _int(node.get(column)) or 0
        numbers = "".join(
            f'<td class="num" data-field="{c}">{_e(_count(node.get(c)))}</td>' for c in columns
        )
        rows.append(
            f'<tr data-node="{_e(name)}"><td><code>{_e(name or _NONE)}</code></td>{numbers}'
            f"<td>{_rate_bar(_num(node.get('match_rate')), threshold)}</td>"
            f"<td>{_top_fields(node.get('fields'))}</td></tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="8" class="empty">no activities compared</td></tr>')
    elif len(rows) > 1:
        total_rate = totals["match"] / totals["activities"] if totals["activities"] else None
        numbers = "".join(f'<td class="num">{totals[c]}</td>' for c in columns)
        rows.append(
            f'<tr class="total"><td>(all nodes)</td>{numbers}'
            f"<td>{_rate_bar(total_rate, threshold)}</td><td></td></tr>"
        )
    return (
        '<section id="readiness" class="panel"><h2>Readiness per node '
        '<span class="hint">activities compared, by the node of the recorded activity</span></h2>'
        f'<table id="nodes"><thead><tr><th>node</th>{head}<th>match rate</th>'
        f"<th>most differing fields</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "</section>"
    )


def _latency(data: Mapping[str, Any]) -> str:
    rows = []
    for key, when in (("recorded_latency", "recorded"), ("latency", "replayed")):
        for path, figures in _map(data.get(key)).items():
            row = _map(figures)
            cells = "".join(
                f'<td class="num">{_e(_ms(_num(row.get(k))))}</td>'
                for k in ("p50_ms", "p95_ms", "p99_ms")
            )
            rows.append(
                f'<tr data-path="{_e(_str(path))}" data-when="{when}"><td>{_path(path)}</td>'
                f'<td>{when}</td><td class="num">{_e(_count(row.get("turns")))}</td>{cells}</tr>'
            )
    if not rows:
        rows.append('<tr><td colspan="6" class="empty">no latency measured</td></tr>')
    return (
        '<section id="latency" class="panel"><h2>Latency per path '
        '<span class="hint">per turn, in milliseconds</span></h2>'
        '<table id="latency-table"><thead><tr><th>path</th><th>as</th><th class="num">turns</th>'
        '<th class="num">p50</th><th class="num">p95</th><th class="num">p99</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _divergences(calls: Sequence[Mapping[str, Any]], limit: int) -> str:
    articles: list[str] = []
    nodes: dict[str, None] = {}
    shown = hidden = 0
    for call in calls:
        if call.get("status") != "diverged":
            continue
        parts: list[str] = []
        for turn in (_map(t) for t in _list(call.get("turns"))):
            if turn.get("diverged") is not True:
                continue
            activities = [
                a for a in map(_map, _list(turn.get("activities"))) if a.get("result") != "match"
            ]
            if not activities:
                parts.append(_turn_note(turn))
            for activity in activities:
                if shown >= limit:
                    hidden += 1
                    continue
                shown += 1
                nodes[_str(activity.get("node"))] = None
                parts.append(_divergence(call, turn, activity))
        if parts:
            articles.append(_call_article(call, parts))
    if not articles and not hidden:
        content = '<p class="empty">No divergences: every compared turn matched.</p>'
    else:
        options = "".join(f'<option value="{_e(n)}">{_e(n)}</option>' for n in nodes)
        content = (
            '<div id="div-filter" class="filters" hidden><label for="div-node">node</label>'
            f'<select id="div-node"><option value="">all nodes</option>{options}</select></div>'
            + "".join(articles)
        )
        if hidden:
            content += (
                f'<p class="hint" id="divergences-cut">{hidden} more differing activities are '
                "not shown here; report.json has them all.</p>"
            )
    return (
        '<section id="divergences" class="panel"><h2>Divergences '
        '<span class="hint">each activity that differs, recorded next to replayed</span></h2>'
        f"{content}</section>"
    )


def _call_article(call: Mapping[str, Any], parts: Sequence[str]) -> str:
    conversation = _str(call.get("conversation"))
    details = [
        f"journal line {_e(_count(call.get('line')))}",
        f"recorded on {_path(call.get('recorded_path'))}",
        _e(_str(call.get("mode")) or _NONE),
        _e(_str(call.get("transport")) or _NONE),
    ]
    head = "".join(f"<span>{d}</span>" for d in details)
    return (
        f'<article class="call" data-conversation="{_e(conversation)}">'
        f'<div class="head"><h3>call <code>{_e(conversation or _NONE)}</code></h3>{head}</div>'
        f"{''.join(parts)}</article>"
    )


def _turn_note(turn: Mapping[str, Any]) -> str:
    why = (
        "the activities came in a different order"
        if turn.get("order_matches") is False
        else "it could not be compared activity by activity"
    )
    return f'<p class="turn-note">turn {_e(_count(turn.get("index")))} diverged: {why}</p>'


def _divergence(
    call: Mapping[str, Any], turn: Mapping[str, Any], activity: Mapping[str, Any]
) -> str:
    node = _str(activity.get("node"))
    result = _str(activity.get("result"))
    recorded, replayed = activity.get("recorded"), activity.get("replayed")
    diffs = [_map(d) for d in _list(activity.get("diffs"))]
    paths = [p for p in (_str(d.get("path")) for d in diffs) if p]
    fields = paths or [_str(f) for f in _list(activity.get("fields")) if _str(f)]
    fields_html = ", ".join(f"<code>{_e(f)}</code>" for f in dict.fromkeys(fields))
    head = [
        f"<span>turn {_e(_count(turn.get('index')))}</span>",
        f"<span>node <code>{_e(node or _NONE)}</code></span>",
        f'<span class="result">{_e(_RESULT_LABELS.get(result, result or "differs"))}</span>',
        f'<span class="fields">fields: {fields_html}</span>' if fields_html else "",
        "<span>order differs</span>" if turn.get("order_matches") is False else "",
    ]
    offset, latency = _num(turn.get("offset_ms")), _num(turn.get("latency_ms"))
    if offset is not None:
        head.append(f"<span>{_e(_count(offset))} ms into the call</span>")
    if latency is not None:
        head.append(f"<span>replayed in {_e(_ms(latency))} ms</span>")
    return (
        f'<div class="divergence" data-node="{_e(node)}" '
        f'data-conversation="{_e(_str(call.get("conversation")))}" '
        f'data-turn="{_e(_count(turn.get("index")))}" data-result="{_e(result)}">'
        f'<div class="head">{"".join(head)}</div>'
        f"{_field_table(recorded, replayed, diffs)}{_raw(recorded, replayed)}</div>"
    )


def _field_table(recorded: Any, replayed: Any, diffs: Sequence[Mapping[str, Any]]) -> str:
    sides = [_lifted(recorded), _lifted(replayed)]
    by_path = {_str(d.get("path")): d for d in diffs if _str(d.get("path"))}
    paths = list(dict.fromkeys([*sides[0], *sides[1], *by_path]))
    rows = []
    for path in paths:
        diff = by_path.get(path)
        differs = diff is not None or any(_related(path, p) for p in by_path)
        cells = []
        for index, (side, key) in enumerate(((recorded, "recorded"), (replayed, "replayed"))):
            lifted = sides[index]
            if side is None:
                value = ""
            elif path in lifted:
                value = _e(_json(lifted[path]))
            elif diff is not None and key in diff and diff[key] is not None:
                value = _e(_json(diff[key]))
            else:
                value = '<span class="absent">absent</span>'
            if differs and side is not None:
                value = f'<mark class="diff" data-field="{_e(path)}">{value}</mark>'
            cells.append(f"<td>{value}</td>")
        kind = _str(diff.get("kind")) if diff is not None else ""
        kind_html = f'<span class="kind">{_e(kind)}</span>' if kind else ""
        row_class = ' class="diff"' if differs else ""
        rows.append(
            f'<tr{row_class} data-field="{_e(path)}">'
            f'<td class="field">{_e(path)}{kind_html}</td>{"".join(cells)}</tr>'
        )
    return (
        "<table><thead><tr><th>field</th>"
        f"<th>recorded{_absent_label(recorded, 'extra in replay')}</th>"
        f"<th>replayed{_absent_label(replayed, 'missing in replay')}</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _absent_label(side: Any, label: str) -> str:
    return "" if side is not None else f' <span class="absent">({label})</span>'


def _raw(recorded: Any, replayed: Any) -> str:
    def side(title: str, value: Any) -> str:
        text = _json(value, indent=2) if value is not None else "(none)"
        return f'<div><strong>{title}</strong><pre class="json">{_e(text)}</pre></div>'

    return (
        "<details><summary>both activities as JSON</summary>"
        f'<div class="sides">{side("recorded", recorded)}{side("replayed", replayed)}</div>'
        "</details>"
    )


def _errors(calls: Sequence[Mapping[str, Any]], data: Mapping[str, Any]) -> str:
    failed = [c for c in calls if c.get("status") == "error"]
    problems = [_map(p) for p in _list(data.get("problems"))]
    if failed:
        rows = "".join(
            f'<tr data-conversation="{_e(_str(c.get("conversation")))}">'
            f'<td class="num">{_e(_count(c.get("line")))}</td>'
            f"<td><code>{_e(_str(c.get('conversation')) or _NONE)}</code></td>"
            f'<td class="error-text">{_e(_str(c.get("error")) or "(no reason given)")}</td></tr>'
            for c in failed
        )
        calls_html = (
            '<table id="error-calls"><thead><tr><th class="num">line</th><th>conversation</th>'
            f"<th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        calls_html = '<p class="empty">No call failed to replay.</p>'
    if problems:
        items = "".join(
            f"<li><code>{_e(_where(p))}</code>: "
            f"{_e(_str(p.get('reason')) or '(no reason given)')}</li>"
            for p in problems
        )
        problems_html = f'<ul id="problems" class="problems">{items}</ul>'
    else:
        problems_html = '<p class="empty">The journal had no problems.</p>'
    return (
        '<section id="errors" class="panel"><h2>Errors</h2>'
        f"<h3>Calls that could not be replayed</h3>{calls_html}"
        f"<h3>Journal problems</h3>{problems_html}</section>"
    )


# --- pieces -----------------------------------------------------------------------------------


def _where(problem: Mapping[str, Any]) -> str:
    file, line = _str(problem.get("file")) or "?", _int(problem.get("line"))
    return f"{file}:{line}" if line else file


def _rate_bar(rate: float | None, threshold: float | None) -> str:
    if rate is None:
        return _NONE
    width = min(max(rate, 0.0), 1.0) * 100
    level = "ok" if threshold is None or rate >= threshold else "warn" if rate >= 0.9 else "bad"
    return (
        f'<div class="rate"><div class="bar"><span class="{level}" style="width: {width:.1f}%">'
        f'</span></div><span data-field="match_rate">{_e(_percent(rate))}</span></div>'
    )


def _top_fields(fields: Any, top: int = 3) -> str:
    counts = [(_str(k), _int(v) or 0) for k, v in _map(fields).items()]
    counts.sort(key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"<code>{_e(name)}</code> ({n})" for name, n in counts[:top])


def _path(value: Any) -> str:
    name = _str(value)
    if name in _PATHS:
        return f'<span class="path-{name}">{name}</span>'
    return _e(name or _NONE)


def _related(path: str, other: str) -> bool:
    """One field path is the other, or an ancestor of it (`a` and `a.b`, `a` and `a[0]`)."""
    return (
        path == other
        or other.startswith((path + ".", path + "["))
        or path.startswith((other + ".", other + "["))
    )


def _lifted(value: Any) -> dict[str, Any]:
    return lift(value) if value is not None else {}


def _percent(rate: float | None) -> str:
    if rate is None:
        return _NONE
    scaled = rate * 1000
    if not math.isfinite(scaled):
        return _NONE
    # Rounded down, so a run that did not fully match never shows as 100.0 %.
    return f"{math.floor(round(scaled, 6)) / 10:.1f} %"


def _ms(value: float | None) -> str:
    return _NONE if value is None else f"{value:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return _NONE
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _speed(speed: float | None) -> str:
    if speed is None:
        return _NONE
    if speed == 0:
        return "0 (no pauses between turns)"
    return f"\N{MULTIPLICATION SIGN}{speed:g}"


def _count(value: Any) -> str:
    number = _num(value)
    if number is None:
        return _NONE
    return str(int(number)) if number == int(number) else f"{number:g}"


def _json(value: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _e(text: str) -> str:
    return escape(text, quote=True)


def _str(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list | tuple) else ()
