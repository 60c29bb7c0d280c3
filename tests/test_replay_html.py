"""The replay report page (bridge/replay_html.py), read back with the standard HTML parser."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.replay_html import render_html

_VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr", "source"}
_BLOCKS = {"td", "th", "tr", "dt", "dd", "div", "li", "p", "h1", "h2", "h3"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def words(self) -> str:
        """The text with blocks and cells apart, whitespace collapsed."""
        parts = (
            c if isinstance(c, str) else f" {c.words()} " if c.tag in _BLOCKS else c.words()
            for c in self.children
        )
        return " ".join("".join(parts).split())

    def iter(self) -> list[Element]:
        out: list[Element] = []
        stack: list[Element] = [self]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(reversed([c for c in current.children if isinstance(c, Element)]))
        return out

    def find_all(self, tag: str, **attrs: str) -> list[Element]:
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            e
            for e in self.iter()
            if e.tag == tag and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]

    def find(self, tag: str, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}>"
        return found[0]

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return
        raise AssertionError(f"</{tag}> closes nothing")

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Element:
    builder = _Builder()
    builder.feed(page)
    builder.close()
    assert [e.tag for e in builder.stack] == ["#root"], "unclosed elements"
    return builder.root


def words(element: Element) -> str:
    return element.words()


def _say(text: str) -> dict[str, Any]:
    return {"type": "message", "text": text, "activityParams": {"language": "de-DE"}}


def _transfer(target: str) -> dict[str, Any]:
    return {
        "type": "event",
        "name": "transfer",
        "activityParams": {"transferTarget": target, "handoverReason": "agent"},
    }


def _report() -> dict[str, Any]:
    return {
        "version": "acvg-replay-report/1",
        "journal": "/var/lib/acvg-bridge/support.jsonl",
        "route": "support",
        "path": "voicegateway",
        "started_at": "2026-12-07T21:00:00Z",
        "seconds": 12.3,
        "speed": 0.0,
        "concurrency": 8,
        "summary": {
            "calls": 4,
            "replayed": 3,
            "errors": 1,
            "skipped": 0,
            "turns": 8,
            "turns_matched": 6,
            "match_rate": 0.75,
            "fail_under": 1.0,
            "passed": False,
        },
        "recorded_paths": {"legacy": 4},
        "nodes": [
            {
                "node": "say",
                "activities": 8,
                "match": 7,
                "mismatch": 1,
                "missing": 0,
                "extra": 0,
                "match_rate": 0.875,
                "fields": {"text": 1},
            },
            {
                "node": "transfer_dial",
                "activities": 2,
                "match": 0,
                "mismatch": 1,
                "missing": 1,
                "extra": 0,
                "match_rate": 0.0,
                "fields": {"activityParams.transferTarget": 1},
            },
            {
                "node": "hangup",
                "activities": 1,
                "match": 0,
                "mismatch": 0,
                "missing": 0,
                "extra": 1,
                "match_rate": 0.0,
                "fields": {},
            },
        ],
        "latency": {"voicegateway": {"turns": 8, "p50_ms": 3.1, "p95_ms": 7.9, "p99_ms": 12.0}},
        "problems": [{"file": "support.jsonl", "line": 7, "reason": "not JSON: Expecting value"}],
        "calls": [
            {
                "line": 1,
                "conversation": "c-match",
                "recorded_path": "legacy",
                "mode": "sync",
                "transport": "http",
                "status": "match",
                "error": None,
                "turns": [{"index": 0, "diverged": False, "order_matches": True, "activities": []}],
            },
            {
                "line": 2,
                "conversation": "c-say",
                "recorded_path": "legacy",
                "mode": "sync",
                "transport": "http",
                "status": "diverged",
                "error": None,
                "turns": [
                    {"index": 0, "diverged": False, "activities": []},
                    {
                        "index": 1,
                        "offset_ms": 1200,
                        "latency_ms": 4.2,
                        "diverged": True,
                        "order_matches": True,
                        "activities": [
                            {
                                "node": "say",
                                "result": "match",
                                "fields": [],
                                "recorded": _say("same"),
                                "replayed": _say("same"),
                                "diffs": [],
                            },
                            {
                                "node": "say",
                                "result": "mismatch",
                                "fields": ["text"],
                                "recorded": _say("Welcome <script>alert(1)</script>"),
                                "replayed": _say("Hello"),
                                "diffs": [
                                    {
                                        "path": "text",
                                        "kind": "value",
                                        "recorded": "Welcome <script>alert(1)</script>",
                                        "replayed": "Hello",
                                    }
                                ],
                            },
                        ],
                    },
                ],
            },
            {
                "line": 3,
                "conversation": 'c-"transfer"',
                "recorded_path": "legacy",
                "mode": "async",
                "transport": "ws",
                "status": "diverged",
                "error": None,
                "turns": [
                    {
                        "index": 2,
                        "diverged": True,
                        "order_matches": True,
                        "activities": [
                            {
                                "node": "transfer_dial",
                                "result": "mismatch",
                                "fields": ["activityParams.transferTarget"],
                                "recorded": _transfer("tel:+4930XXXXXX12"),
                                "replayed": _transfer("sip:agent@pbx"),
                                "diffs": [
                                    {
                                        "path": "activityParams.transferTarget",
                                        "kind": "value",
                                        "recorded": "tel:+4930XXXXXX12",
                                        "replayed": "sip:agent@pbx",
                                    }
                                ],
                            },
                            {
                                "node": "transfer_dial",
                                "result": "missing",
                                "fields": [],
                                "recorded": _transfer("tel:+4930XXXXXX99"),
                                "replayed": None,
                                "diffs": [],
                            },
                            {
                                "node": "hangup",
                                "result": "extra",
                                "fields": [],
                                "recorded": None,
                                "replayed": {"type": "event", "name": "hangup"},
                                "diffs": [],
                            },
                        ],
                    }
                ],
            },
            {
                "line": 4,
                "conversation": "c-<b>broken</b>",
                "recorded_path": "legacy",
                "mode": "sync",
                "transport": "http",
                "status": "error",
                "error": "the path refused the call: HTTP 503",
                "turns": [],
            },
        ],
    }


def _divergences(page: Element) -> list[Element]:
    return [e for e in page.iter() if e.tag == "div" and "divergence" in e.classes()]


def test_the_page_loads_nothing() -> None:
    page = render_html(_report())
    assert "<link" not in page
    assert not re.search(r"\b(src|href|action|srcset)\s*=", page)
    assert "url(" not in page and "@import" not in page
    csp = parse(page).find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in csp
    # Only the page's own script may run: its hash is the one the policy allows.
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


def test_journal_text_is_escaped() -> None:
    page = render_html(_report())
    assert page.count("<script") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>broken</b>" not in page and "c-&lt;b&gt;broken&lt;/b&gt;" in page
    tree = parse(page)
    (transfer,) = tree.find_all("article", data_conversation='c-"transfer"')
    assert "transfer_dial" in words(transfer)


def test_header_shows_the_run() -> None:
    tree = parse(render_html(_report()))
    header = tree.find("header")
    text = words(header)
    assert "acvg-bridge replay report" in text
    assert "route support" in text
    assert "support.jsonl" in text and "/var/lib" not in text
    assert "2026-12-07T21:00:00Z" in text and "12.3 s" in text and "concurrency 8" in text
    assert header.find("span", **{"class": "path-voicegateway"}).text() == "voicegateway"


def test_summary_shows_the_rate_and_the_verdict() -> None:
    tree = parse(render_html(_report()))
    summary = tree.find("section", id="summary")
    assert summary.find("span", id="match-rate").text() == "75.0 %"
    verdict = summary.find("span", id="verdict")
    assert verdict.text() == "FAIL" and "bad" in verdict.classes()
    figures = {
        e.attrs["data-figure"]: words(e.find("span", **{"class": "value"}))
        for e in summary.iter()
        if "data-figure" in e.attrs
    }
    assert figures == {
        "calls": "4",
        "replayed": "3",
        "diverged": "2",
        "errors": "1",
        "skipped": "0",
        "bad journal lines": "1",
        "turns compared": "8",
        "turns matched": "6",
    }
    assert "fail-under 100.0 %" in words(summary)


def test_a_rate_just_below_one_is_not_shown_as_100() -> None:
    report = _report()
    report["summary"].update(match_rate=0.99996, passed=False)
    tree = parse(render_html(report))
    assert tree.find("span", id="match-rate").text() == "99.9 %"


def test_passed_run() -> None:
    report = _report()
    report["summary"].update(match_rate=1.0, passed=True)
    verdict = parse(render_html(report)).find("span", id="verdict")
    assert verdict.text() == "PASS" and "ok" in verdict.classes()


def test_node_table_has_a_row_per_node() -> None:
    table = parse(render_html(_report())).find("table", id="nodes")
    rows = [r for r in table.find_all("tr") if "data-node" in r.attrs]
    assert [r.attrs["data-node"] for r in rows] == ["say", "transfer_dial", "hangup"]
    say = rows[0]
    cells = {c.attrs["data-field"]: c.text() for c in say.find_all("td") if "data-field" in c.attrs}
    assert cells == {
        "activities": "8",
        "match": "7",
        "mismatch": "1",
        "missing": "0",
        "extra": "0",
    }
    assert say.find("span", data_field="match_rate").text() == "87.5 %"
    assert "text (1)" in words(say)
    assert "activityParams.transferTarget (1)" in words(rows[1])
    total = next(r for r in table.find_all("tr") if "total" in r.classes())
    assert "(all nodes) 11 7 2 1 1" in words(total)


def test_latency_table() -> None:
    table = parse(render_html(_report())).find("table", id="latency-table")
    row = table.find("tr", data_path="voicegateway")
    assert words(row) == "voicegateway replayed 8 3.1 7.9 12.0"
    recorded = {"legacy": {"turns": 5, "p50_ms": 2.0, "p95_ms": 4.5, "p99_ms": 6.0}}
    table = parse(render_html(_report() | {"recorded_latency": recorded})).find(
        "table", id="latency-table"
    )
    assert words(table.find("tr", data_path="legacy")) == "legacy recorded 5 2.0 4.5 6.0"


def test_each_divergence_highlights_its_differing_fields_and_only_those() -> None:
    report = _report()
    tree = parse(render_html(report))
    shown = _divergences(tree)
    expected = [
        (call, turn, activity)
        for call in report["calls"]
        if call["status"] == "diverged"
        for turn in call["turns"]
        if turn["diverged"]
        for activity in turn["activities"]
        if activity["result"] != "match"
    ]
    assert [(d.attrs["data-conversation"], d.attrs["data-turn"]) for d in shown] == [
        (c["conversation"], str(t["index"])) for c, t, _ in expected
    ]
    for element, (_, _, activity) in zip(shown, expected, strict=True):
        assert element.attrs["data-node"] == activity["node"]
        diff_paths = {d["path"] for d in activity["diffs"]}
        rows = [r for r in element.find_all("tr") if "data-field" in r.attrs]
        highlighted = {r.attrs["data-field"] for r in rows if "diff" in r.classes()}
        assert highlighted == diff_paths
        marks = element.find_all("mark")
        assert all(m.classes() == {"diff"} for m in marks)
        sides = sum(activity[s] is not None for s in ("recorded", "replayed"))
        assert sorted(m.attrs["data-field"] for m in marks) == sorted(diff_paths) * sides


def test_a_divergence_shows_both_values_of_a_field() -> None:
    tree = parse(render_html(_report()))
    say = next(d for d in _divergences(tree) if d.attrs["data-node"] == "say")
    row = say.find("tr", data_field="text")
    recorded, replayed = (m.text() for m in row.find_all("mark"))
    assert recorded == '"Welcome <script>alert(1)</script>"'
    assert replayed == '"Hello"'
    assert words(say.find("tr", data_field="activityParams.language")) == (
        'activityParams.language "de-DE" "de-DE"'
    )
    assert "fields differ" in words(say)


def test_missing_and_extra_activities_are_labelled() -> None:
    tree = parse(render_html(_report()))
    by_result = {d.attrs["data-result"]: d for d in _divergences(tree)}
    missing, extra = by_result["missing"], by_result["extra"]
    assert "missing in replay" in words(missing.find("thead"))
    assert words(missing.find("tr", data_field="name")) == 'name "transfer"'
    assert "extra in replay" in words(extra.find("thead"))
    assert words(extra.find("tr", data_field="name")) == 'name "hangup"'


def test_zero_divergences_says_so() -> None:
    report = _report()
    report["calls"] = [c for c in report["calls"] if c["status"] != "diverged"]
    tree = parse(render_html(report))
    section = tree.find("section", id="divergences")
    assert not _divergences(tree)
    assert "No divergences" in words(section)
    assert not tree.find_all("select")


def test_divergences_beyond_the_cap_are_counted() -> None:
    tree = parse(render_html(_report(), max_divergences=2))
    assert len(_divergences(tree)) == 2
    assert words(tree.find("p", id="divergences-cut")).startswith("2 more differing activities")


def test_errors_are_listed() -> None:
    tree = parse(render_html(_report()))
    errors = tree.find("section", id="errors")
    row = errors.find("tr", data_conversation="c-<b>broken</b>")
    assert words(row) == "4 c-<b>broken</b> the path refused the call: HTTP 503"
    assert words(errors.find("ul", id="problems")) == "support.jsonl:7: not JSON: Expecting value"


def test_a_problem_without_a_line_names_the_file() -> None:
    report = _report()
    report["problems"] = [{"file": "support.jsonl", "line": None, "reason": "cannot read"}]
    errors = parse(render_html(report)).find("section", id="errors")
    assert words(errors.find("ul", id="problems")) == "support.jsonl: cannot read"


def test_a_turn_without_activities_is_noted() -> None:
    report = _report()
    report["calls"][1]["turns"][1]["activities"] = []
    tree = parse(render_html(report))
    call = tree.find("article", data_conversation="c-say")
    assert not _divergences(call)
    assert "turn 1 diverged" in words(call)


def test_no_errors_says_so() -> None:
    report = _report()
    report["calls"] = [c for c in report["calls"] if c["status"] != "error"]
    report["problems"] = []
    errors = parse(render_html(report)).find("section", id="errors")
    assert "No call failed to replay" in words(errors)
    assert "no problems" in words(errors)


def test_an_empty_or_broken_report_still_renders() -> None:
    for report in ({}, {"summary": None, "nodes": "x", "calls": [None, 3, {"turns": 5}]}):
        tree = parse(render_html(report))
        assert tree.find("span", id="match-rate").text() == "\N{EN DASH}"
        assert tree.find("section", id="errors")
    broken = copy.deepcopy(_report())
    broken["calls"][1]["turns"][1]["activities"][1]["diffs"] = [{"path": 3}, "x", None]
    broken["summary"]["match_rate"] = float("nan")
    broken["nodes"][0]["match_rate"] = 1e308
    broken["seconds"] = 10**400
    parse(render_html(broken))


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["diverged", "error", "mismatch", "missing", "extra", "legacy", "<&\"'>"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["summary", "nodes", "calls", "turns", "activities", "diffs", "recorded", "replayed",
     "path", "status", "result", "node", "match_rate", "latency", "problems", "fields"]
)  # fmt: skip
_report_like = st.recursive(
    st.dictionaries(_keys, _json, max_size=6),
    lambda inner: st.dictionaries(_keys, inner | st.lists(inner, max_size=3), max_size=6),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(_report_like)
def test_any_json_renders(report: dict[str, Any]) -> None:
    page = render_html(report)
    assert page.count("<script") == 1
    parse(page).find("section", id="summary")


def test_a_field_that_changed_type_highlights_its_leaves_on_both_sides() -> None:
    report = _report()
    activity = report["calls"][1]["turns"][1]["activities"][1]
    activity.update(
        recorded={"type": "message", "activityParams": {"language": "de-DE"}},
        replayed={"type": "message", "activityParams": "de-DE"},
        diffs=[{"path": "activityParams", "kind": "type"}],
    )
    say = next(d for d in _divergences(parse(render_html(report))) if d.attrs["data-node"] == "say")
    highlighted = [r.attrs["data-field"] for r in say.find_all("tr") if "diff" in r.classes()]
    assert highlighted == ["activityParams.language", "activityParams"]
    assert words(say.find("tr", data_field="activityParams.language")) == (
        'activityParams.language "de-DE" absent'
    )
    assert not [r for r in say.find_all("tr", data_field="type") if "diff" in r.classes()]
