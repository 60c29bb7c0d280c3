"""The output chain without sockets: fake jambonz app → CallProtocol → Engine → Outbox → VAIC.

`Chain` drives the pure pieces the way session.py does; a hypothesis-driven app acks hooks (with
verbs or empty, or never), sends `redirect` commands (queueCommand true/false), and the caller
sends inputs while the push channel comes and goes (HTTP mode) or stays (WebSocket mode).
`JambonzOracle` is an independent model of feature-server's verb stack: the verbs it says ran
are exactly the verbs whose outputs VAIC must receive, each once, in order.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import currently_in_test_context, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from bridge.delivery import BatchEnd, Channel, Outbox
from bridge.mapping.engine import Engine
from bridge.mapping.loader import load_mappings
from bridge.path import TURN_ENDING_VERBS
from bridge.voicegateway.events import AckTimedOut, VerbExecuted
from bridge.voicegateway.protocol import CallProtocol
from bridge.voicegateway.wire import ACK_TIMEOUT_S, HookKind

SETTLE = 0.5
TIMEOUT = 3.0
ENGINE = Engine(load_mappings())
BLOCKING = {"gather": HookKind.INPUT, "dial": HookKind.TRANSFER, "sip:refer": HookKind.TRANSFER}

Verb = dict[str, Any]


def note_event(what: str) -> None:
    """Count `what` in hypothesis's statistics (`--hypothesis-show-statistics`)."""
    if currently_in_test_context():
        hypothesis_event(what)


# ---- verbs the app sends: each instance unique, so every output names its verb -----------

VERB_KINDS = [
    "say",
    "say2",
    "play",
    "play_hook",
    "gather",
    "gather_bare",
    "config",
    "tag",
    "pause",
    "dial",
    "dial_hook",
    "refer",
    "refer_hook",
    "hangup",
]
# hangup ends the call: rarer, so most runs go on long enough to be interesting
kind_strategy = st.sampled_from([k for k in VERB_KINDS if k != "hangup"] * 4 + ["hangup"])
batch_strategy = st.lists(kind_strategy, max_size=3)


def make_verb(kind: str, uid: int) -> Verb:
    """One verb of `kind`; `uid` appears in its outputs (when it has any)."""
    if kind == "say":
        return {"verb": "say", "text": f"text {uid}"}
    if kind == "say2":
        return {"verb": "say", "text": [f"text {uid}a", f"text {uid}b"]}
    if kind in ("play", "play_hook"):
        verb: Verb = {"verb": "play", "url": f"http://media.test/{uid}.wav"}
        if kind == "play_hook":
            verb["actionHook"] = "/play-done"
        return verb
    if kind == "gather":
        prompt = {"text": f"prompt {uid}"}
        return {"verb": "gather", "input": ["speech", "digits"], "actionHook": "/g", "say": prompt}
    if kind == "gather_bare":  # speech only, no prompt: ends the turn with no activity
        return {"verb": "gather", "input": ["speech"]}
    if kind == "config":
        return {"verb": "config", "synthesizer": {"voice": f"voice-{uid}"}}
    if kind == "tag":
        return {"verb": "tag", "data": {"uid": uid}}
    if kind == "pause":  # unmapped: no output
        return {"verb": "pause", "length": 1}
    if kind.startswith("dial"):
        verb = {"verb": "dial", "target": [{"type": "sip", "sipUri": f"sip:{uid}@pbx.test"}]}
    elif kind.startswith("refer"):
        verb = {"verb": "sip:refer", "referTo": f"sip:{uid}@pbx.test"}
    else:
        assert kind == "hangup"
        return {"verb": "hangup", "headers": {"X-Reason": f"reason {uid}"}}
    if kind.endswith("_hook"):
        verb["actionHook"] = "/transfer-done"
    return verb


def new_ctx() -> dict[str, Any]:
    return {
        "route": "r",
        "call_sid": "call-1",
        "conversation_id": "conv-1",
        "account_sid": "acc",
        "application_sid": "app",
        "caller_e164": None,
        "number_metadata": None,
        "sip_headers": {},
        "language": "en-US",
        "transfer_verb": None,
        "default_region": None,
    }


def translate(verb: Verb, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """A verb's activities, with the context updates session._run_verb makes first."""
    name = verb["verb"]
    if name in ("dial", "sip:refer"):
        ctx["transfer_verb"] = name
    outputs: list[dict[str, Any]] = []
    for translation in ENGINE.verb_to_activities(verb, ctx):
        if translation.result == "ok":  # the route's `unmapped: skip` default
            outputs.extend(translation.outputs)
    return outputs


# ---- the oracle: feature-server's verb stack, as the app sees it ------------------------------


@dataclass
class _Blocked:
    verb: Verb
    kind: HookKind
    token: int
    hooked: bool = False  # its hook went out: later inputs go elsewhere


@dataclass
class JambonzOracle:
    """Which verbs jambonz executes, from what the app sent and what the caller did.

    - session:new ack: its verbs are the stack.
    - a blocking verb (gather, dial, sip:refer) stops the stack until its hook's ack (or ack
      timeout); an empty ack lets the stack continue after it.
    - an ack with verbs replaces the remaining stack and ends whatever is blocking.
    - redirect, queueCommand false: kills the current verb, discards the rest of the stack, runs
      the new verbs; queueCommand true: appended, run after the current verb and the stack.
    - hangup: nothing runs after it.
    """

    stack: list[Verb] = field(default_factory=list)
    blocked: _Blocked | None = None
    hung_up: bool = False
    active: bool = False
    executed: list[Verb] = field(default_factory=list)
    hooks: dict[str, tuple[float, int | None]] = field(default_factory=dict)  # msgid: sent, token
    tokens: int = 0

    def session_ack(self, verbs: list[Verb]) -> None:
        self.active = True
        self.stack = copy.deepcopy(verbs)
        self.run()

    def hook_expected(self, kind: HookKind) -> bool:
        """Whether the caller's input of `kind` goes out as a verb:hook."""
        if not self.active or self.hung_up:
            return False
        if kind is HookKind.INPUT:
            return True
        blocked = self.open_blocked(kind)
        return blocked is not None and "actionHook" in blocked.verb

    def caller_input(self, kind: HookKind, msgid: str | None, now: float) -> None:
        if not self.active or self.hung_up:
            return
        blocked = self.open_blocked(kind)
        if msgid is None:
            if blocked is not None:  # a transfer without actionHook just completes
                self.blocked = None
                self.run()
            return
        token = None
        if blocked is not None:
            blocked.hooked = True
            token = blocked.token
        self.hooks[msgid] = (now, token)

    def ack(self, msgid: str, verbs: list[Verb]) -> None:
        hook = self.hooks.pop(msgid, None)
        if hook is None or self.hung_up:
            return  # unknown, or already timed out
        if verbs:
            self.blocked = None
            self.stack = copy.deepcopy(verbs)
        elif self.blocked is not None and self.blocked.token == hook[1]:
            self.blocked = None
        self.run()

    def redirect(self, verbs: list[Verb], queue: bool) -> None:
        if not self.active or self.hung_up:
            return
        if queue:
            self.stack.extend(copy.deepcopy(verbs))
        else:
            if self.blocked is not None or self.stack:
                note_event("replace redirect killed a verb or discarded the stack")
            self.blocked = None
            self.stack = copy.deepcopy(verbs)
        self.run()

    def advance(self, now: float) -> None:
        due = sorted(
            (sent + ACK_TIMEOUT_S, msgid)
            for msgid, (sent, _) in self.hooks.items()
            if sent + ACK_TIMEOUT_S <= now
        )
        for _, msgid in due:
            note_event("a hook's ack timed out")
            self.ack(msgid, [])

    def open_blocked(self, kind: HookKind) -> _Blocked | None:
        blocked = self.blocked
        if blocked is None or blocked.kind is not kind or blocked.hooked:
            return None
        return blocked

    def run(self) -> None:
        while self.active and not self.hung_up and self.blocked is None and self.stack:
            verb = self.stack.pop(0)
            self.executed.append(verb)
            name = verb["verb"]
            if name == "hangup":
                self.hung_up = True
                self.stack.clear()
            elif name in BLOCKING:
                self.tokens += 1
                self.blocked = _Blocked(verb, BLOCKING[name], self.tokens)


# ---- the chain, driven as session.py drives it ---------------------------------------------------


@dataclass
class Chain:
    async_mode: bool
    websocket: bool  # WebSocket mode: the VAIC socket is the push channel, always there
    now: float = 0.0
    protocol: CallProtocol = field(init=False)
    outbox: Outbox = field(init=False)
    oracle: JambonzOracle = field(default_factory=JambonzOracle)
    ctx: dict[str, Any] = field(default_factory=new_ctx)
    uids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    stamps: itertools.count[int] = field(default_factory=itertools.count)
    produced: list[str] = field(default_factory=list)  # stamped ids, in production order
    received: list[tuple[str, tuple[dict[str, Any], ...]]] = field(default_factory=list)
    executed: list[Verb] = field(default_factory=list)
    app_pending: list[str] = field(default_factory=list)  # hooks the app has not acked
    timed_out: list[str] = field(default_factory=list)
    session_msgid: str = ""
    push: bool = False
    pushes_to_fail: int = 0
    turns: int = 0
    turn: int | None = None
    answered: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        msgids = itertools.count()
        self.protocol = CallProtocol(
            "call-1", input_hook="/voice", now=0.0, msgid_factory=lambda: f"m{next(msgids):06d}"
        )
        self.outbox = Outbox(async_mode=self.async_mode, settle_s=SETTLE, timeout_s=TIMEOUT)
        if self.websocket:
            self.connect()

    # -- session.py's plumbing --

    def after_protocol(self) -> None:
        turn_ended = False
        while events := self.protocol.events_received():
            for event in events:
                if isinstance(event, VerbExecuted):
                    turn_ended |= event.verb["verb"] in TURN_ENDING_VERBS
                    self.run_verb(event.verb)
                elif isinstance(event, AckTimedOut):
                    self.timed_out.append(event.msgid)
        self.outbox.set_busy(self.protocol.awaiting_ack, self.now)
        self.app_receive(self.protocol.messages_to_send())
        self.deliver()
        if turn_ended:
            assert self.turn is None, "a turn-ending verb ran but the response waits"

    def run_verb(self, verb: Verb) -> None:
        self.executed.append(copy.deepcopy(verb))
        outputs = []
        for output in translate(verb, self.ctx):
            stamp = f"a{next(self.stamps)}"
            self.produced.append(stamp)
            outputs.append({"id": stamp, **output})
        name = verb["verb"]
        self.outbox.add_outputs(outputs, self.now, turn_ending=name in TURN_ENDING_VERBS)
        if name == "hangup":
            self.protocol.end("jambonz", self.now)

    def deliver(self) -> None:
        for delivery in self.outbox.poll(self.now):
            if delivery.channel is Channel.RESPONSE:
                assert not self.async_mode
                assert self.turn is not None, "response for a closed turn"
                assert delivery.turn == self.turn, "response for another turn"
                note_event(f"response ended by {delivery.ended_by.value}")
                self.answered.append(self.turn)
                self.turn = None
                self.received.append(("response", delivery.outputs))
                continue
            assert delivery.outputs, "an empty push"
            if self.async_mode:
                assert len(delivery.outputs) == 1, "async: one output per push"
                assert delivery.ended_by is BatchEnd.ASYNC
            if not self.push:
                self.outbox.requeue(delivery)
            elif self.pushes_to_fail:
                note_event(f"a {delivery.ended_by.value} push failed and was requeued")
                self.pushes_to_fail -= 1
                self.outbox.requeue(delivery)
                self.push = False
                self.outbox.disconnect_push()
            else:
                note_event(f"a {delivery.ended_by.value} push delivered")
                self.received.append(("push", delivery.outputs))

    def connect(self) -> None:
        self.push = True
        self.outbox.connect_push()
        self.deliver()

    # -- the fake jambonz app --

    def app_receive(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            if message["type"] == "session:new":
                self.session_msgid = message["msgid"]
            elif message["type"] == "verb:hook":
                self.app_pending.append(message["msgid"])

    def batch(self, kinds: list[str]) -> list[Verb]:
        return [make_verb(kind, next(self.uids)) for kind in kinds]

    def start(self, kinds: list[str]) -> None:
        """VAIC's start: session:new, and the app answers with its first verbs."""
        self.open_turn()
        self.protocol.start({"direction": "inbound", "from": "anonymous", "to": "bot"}, self.now)
        self.after_protocol()
        verbs = self.batch(kinds)
        ack = {"type": "ack", "msgid": self.session_msgid, "data": verbs}
        self.protocol.receive_message(ack, self.now)
        self.oracle.session_ack(verbs)
        self.after_protocol()
        self.close_turn()

    def ack(self, index: int, kinds: list[str]) -> None:
        if not self.app_pending:
            return
        msgid = self.app_pending.pop(index % len(self.app_pending))
        verbs = self.batch(kinds)
        self.protocol.receive_message({"type": "ack", "msgid": msgid, "data": verbs}, self.now)
        self.oracle.ack(msgid, verbs)
        self.after_protocol()

    def redirect(self, kinds: list[str], queue: bool) -> None:
        verbs = self.batch(kinds)
        command = {"type": "command", "command": "redirect", "queueCommand": queue, "data": verbs}
        self.protocol.receive_message(command, self.now)
        self.oracle.redirect(verbs, queue)
        self.after_protocol()

    # -- the caller and VAIC --

    def open_turn(self) -> bool:
        if self.async_mode:
            return True
        if self.turn is not None:
            return False  # the session's turn lock: VAIC's next POST waits for this answer
        self.turns += 1
        self.turn = self.turns
        self.outbox.begin_turn(self.turn, self.now)
        return True

    def close_turn(self) -> None:
        self.deliver()
        if self.async_mode:
            self.received.append(("waiting", self.outbox.take_waiting()))

    def caller_input(self, kind: HookKind) -> None:
        if not self.open_turn():
            return
        expected = self.oracle.hook_expected(kind)
        result = {"reason": "speechDetected"} if kind is HookKind.INPUT else {"dial_status": "ok"}
        sent = self.protocol.send_input(kind, result, self.now)
        assert sent == expected, "a hook sent where jambonz would send none, or the reverse"
        messages = self.protocol.messages_to_send()
        hooks = [m["msgid"] for m in messages if m["type"] == "verb:hook"]
        assert len(hooks) == int(sent)
        self.oracle.caller_input(kind, hooks[0] if hooks else None, self.now)
        self.app_receive(messages)
        self.after_protocol()
        self.close_turn()

    def advance(self, dt: float) -> None:
        self.now += dt
        self.oracle.advance(self.now)
        self.protocol.tick(self.now)
        self.after_protocol()

    def drain(self) -> None:
        """The call ends; VAIC gets whatever still waits on the next channel it offers."""
        self.outbox.call_ended()
        self.deliver()
        assert self.outbox.open_turn is None
        self.pushes_to_fail = 0
        if self.async_mode:
            self.received.append(("waiting", self.outbox.take_waiting()))
        if not self.push:
            self.connect()

    # -- what VAIC got --

    def delivered(self) -> list[dict[str, Any]]:
        return [output for _, batch in self.received for output in batch]

    def check_prefix(self) -> None:
        ids = [output["id"] for output in self.delivered()]
        assert ids == self.produced[: len(ids)], "lost, duplicated or reordered"
        if self.websocket:
            assert all(not batch for channel, batch in self.received if channel == "waiting")


Op = tuple[Any, ...]

redirect_strategy = st.tuples(st.just("redirect"), batch_strategy, st.booleans())
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("input"), st.sampled_from([HookKind.INPUT, HookKind.TRANSFER])),
        st.tuples(st.just("ack"), st.integers(0, 3), batch_strategy),
        st.tuples(st.just("ack"), st.integers(0, 3), st.just([])),
        redirect_strategy,
        redirect_strategy,
        st.tuples(st.just("advance"), st.sampled_from([0.1, SETTLE, 1.0, TIMEOUT, ACK_TIMEOUT_S])),
        st.tuples(st.sampled_from(["connect", "drop", "fail_push"])),
    ),
    min_size=3,
    max_size=30,
)


def run_chain(async_mode: bool, websocket: bool, first: list[str], ops: list[Op]) -> Chain:
    chain = Chain(async_mode, websocket)
    chain.start(first)
    chain.check_prefix()
    for op in ops:
        kind = op[0]
        if kind == "input":
            chain.caller_input(op[1])
        elif kind == "ack":
            chain.ack(op[1], op[2])
        elif kind == "redirect":
            chain.redirect(op[1], op[2])
        elif kind == "advance":
            chain.advance(op[1])
        elif websocket:
            pass  # the VAIC socket is the push channel for the whole call
        elif kind == "connect":
            chain.connect()
        elif kind == "drop":
            chain.push = False
            chain.outbox.disconnect_push()
        elif kind == "fail_push":
            chain.pushes_to_fail += 1
        chain.check_prefix()
        if async_mode and chain.push:
            assert [o["id"] for o in chain.delivered()] == chain.produced, "async: output held"
    chain.drain()
    check_complete(chain)
    return chain


def check_complete(chain: Chain) -> None:
    # the protocol ran exactly the verbs jambonz would have run
    assert chain.executed == chain.oracle.executed
    # every output translated, delivered once, in production order
    delivered = chain.delivered()
    assert [output["id"] for output in delivered] == chain.produced
    # ... and they are the activities of exactly those verbs: replaced verbs left nothing
    ctx = new_ctx()
    expected = [output for verb in chain.oracle.executed for output in translate(verb, ctx)]
    assert [{k: v for k, v in o.items() if k != "id"} for o in delivered] == expected
    if not chain.async_mode:
        assert chain.answered == list(range(1, chain.turns + 1)), "a turn not answered once"


MODES = [
    pytest.param(False, False, id="sync-http"),
    pytest.param(True, False, id="async-http"),
    pytest.param(False, True, id="sync-websocket"),
    pytest.param(True, True, id="async-websocket"),
]


@pytest.mark.parametrize(("async_mode", "websocket"), MODES)
@settings(max_examples=500, deadline=None)
@given(first=st.lists(kind_strategy, min_size=1, max_size=3), ops=ops_strategy)
def test_property_chain_delivers_exactly_the_executed_verbs(
    async_mode: bool, websocket: bool, first: list[str], ops: list[Op]
) -> None:
    run_chain(async_mode, websocket, first, ops)


# ---- scenarios the properties cover, spelled out ------------------------------------------


def texts(chain: Chain) -> list[str]:
    return [str(o.get("text")) for o in chain.delivered()]


def test_replace_redirect_kills_the_gather_and_discards_the_stack() -> None:
    chain = Chain(async_mode=True, websocket=True)
    chain.start(["say", "gather", "say"])  # text 1, prompt 2, text 3
    chain.redirect(["say"], queue=False)  # text 4
    chain.caller_input(HookKind.INPUT)  # the gather is gone: the default input hook
    chain.ack(0, [])
    chain.drain()
    check_complete(chain)
    assert texts(chain) == ["text 1", "prompt 2", "text 4"]


def test_append_redirect_runs_after_the_blocking_gather() -> None:
    chain = Chain(async_mode=False, websocket=False)
    chain.start(["gather", "say"])  # prompt 1, text 2
    chain.redirect(["say"], queue=True)  # text 3
    assert texts(chain) == ["prompt 1"]
    chain.caller_input(HookKind.INPUT)
    chain.ack(0, [])
    chain.advance(SETTLE)
    chain.drain()
    check_complete(chain)
    assert texts(chain) == ["prompt 1", "text 2", "text 3"]
    assert [channel for channel, _ in chain.received] == ["response", "response"]


def test_ack_with_verbs_replaces_the_remaining_stack() -> None:
    chain = Chain(async_mode=False, websocket=True)
    chain.start(["gather", "say"])  # prompt 1, text 2 never runs
    chain.caller_input(HookKind.INPUT)
    chain.ack(0, ["say", "hangup"])  # text 3, hangup 4
    chain.drain()
    check_complete(chain)
    assert texts(chain) == ["prompt 1", "text 3", "None"]
    assert chain.received[-1][1][-1]["name"] == "hangup"


def test_redirect_while_idle_is_pushed_unsolicited() -> None:
    chain = Chain(async_mode=False, websocket=False)
    chain.start(["say"])
    chain.advance(SETTLE)
    chain.redirect(["say", "say"], queue=True)
    chain.advance(SETTLE)  # no push channel: they wait
    assert texts(chain) == ["text 1"]
    chain.connect()
    assert [channel for channel, _ in chain.received] == ["response", "push"]
    assert texts(chain) == ["text 1", "text 2", "text 3"]


def test_oracle_disagrees_when_a_replace_is_treated_as_append() -> None:
    """The oracle can fail: a protocol that queues every redirect is caught."""
    chain = Chain(async_mode=True, websocket=True)
    chain.start(["gather"])
    verbs = chain.batch(["say"])
    command = {"type": "command", "command": "redirect", "queueCommand": True, "data": verbs}
    chain.protocol.receive_message(command, chain.now)  # the app asked for a replace
    chain.oracle.redirect(verbs, queue=False)
    chain.after_protocol()
    chain.drain()
    with pytest.raises(AssertionError):
        check_complete(chain)
