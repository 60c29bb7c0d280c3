"""Log setup: line format with the call context, and redaction of numbers, digits and tokens."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bridge.logs import (
    SCRUBBED,
    ContextFormatter,
    RedactingFilter,
    configure_logging,
    parse_level,
    scrub,
)
from bridge.sim.vaic import VaicClient
from tests.conftest import BridgeFactory, logging_into, route_config

CALLER = "+4921154591991"
DTMF = "4711"
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<logger>\S+) (?P<rest>.*)$"
)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    with logging_into("DEBUG") as stream:
        yield stream


def test_line_has_time_level_logger_message_and_call_context(log_stream: io.StringIO) -> None:
    call = logging.LoggerAdapter(
        logging.getLogger("bridge.session"),
        {"route": "support", "conversation": "c-one", "call_sid": "sid-1"},
    )
    call.warning("voice gateway frame rejected: %s", "ack without msgid")
    (line,) = log_stream.getvalue().splitlines()
    match = LINE.match(line)
    assert match is not None, line
    assert match["level"] == "WARNING" and match["logger"] == "bridge.session"
    assert match["rest"] == (
        "voice gateway frame rejected: ack without msgid route=support conversation=c-one "
        "call_sid=sid-1"
    )


def test_line_without_context_and_quoting_of_odd_values(log_stream: io.StringIO) -> None:
    logging.getLogger("bridge.app").info("plain")
    logging.getLogger("bridge.app").info("odd", extra={"route": "a b"})
    first, second = log_stream.getvalue().splitlines()
    assert first.endswith(" INFO bridge.app plain")
    assert second.endswith(' INFO bridge.app odd route="a b"')


def test_numbers_and_digits_never_reach_the_output(log_stream: io.StringIO) -> None:
    log = logging.getLogger("bridge.session")
    log.info(f"caller {CALLER} pressed {DTMF}")
    log.info("caller %s pressed %s", CALLER, DTMF)
    log.info("national %s", "0211 545 91991")
    log.info("hook data %s", {"reason": "dtmfDetected", "digits": "1"})
    log.info("dtmf=9 sent, dtmfDigits: '*5'")
    try:
        raise ValueError(f"cannot route {CALLER} after {DTMF}")
    except ValueError:
        log.exception("turn failed")
    log.error("task failed", exc_info=KeyError(CALLER))
    log.info("with stack", stack_info=True)
    text = log_stream.getvalue()
    for secret in (CALLER, "4921154591991", DTMF, "91991", "'1'", "dtmf=9", "'*5'"):
        assert secret not in text, secret
    assert "caller +<redacted> pressed <redacted>" in text
    assert "'digits': '<redacted>'" in text
    assert "ValueError: cannot route +<redacted> after <redacted>" in text
    assert "KeyError: '+<redacted>'" in text
    assert "Traceback" in text


def test_tokens_are_masked(log_stream: io.StringIO) -> None:
    logging.getLogger("bridge.http").warning("header Authorization: Bearer s3cr3t-Tok")
    logging.getLogger("bridge.http").warning("config token=abcDEF route ok")
    text = log_stream.getvalue()
    assert "s3cr3t" not in text and "abcDEF" not in text
    assert "Bearer <redacted>" in text and "token=<redacted>" in text


def test_words_after_a_dtmf_key_stay(log_stream: io.StringIO) -> None:
    logging.getLogger("bridge.session").warning("to_voicegateway event DTMF: unmapped (-)")
    assert "event DTMF: unmapped (-)" in log_stream.getvalue()


def test_level_applies_and_frame_loggers_stay_at_info() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    frames = logging.getLogger("websockets")
    frames_level = frames.level
    try:
        stream = io.StringIO()
        configure_logging("warning", stream=stream)
        logging.getLogger("bridge.x").info("hidden")
        logging.getLogger("bridge.x").warning("shown")
        configure_logging("DEBUG", stream=stream)
        assert frames.getEffectiveLevel() == logging.INFO
        logging.getLogger("websockets.client").debug("> TEXT frame")
        ours = [h for h in root.handlers if h not in handlers]
        assert len(ours) == 1, "configure_logging twice must not stack handlers"
        lines = stream.getvalue().splitlines()
        assert [line.rsplit(" ", 1)[-1] for line in lines] == ["shown"]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        frames.setLevel(frames_level)


def test_parse_level_rejects_unknown_names() -> None:
    assert parse_level("info") == logging.INFO
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        parse_level("LOUD")
    with pytest.raises(ValueError):
        parse_level("NOTSET")


def test_filter_rewrites_the_record_in_place() -> None:
    record = logging.LogRecord("bridge", logging.INFO, __file__, 1, "from %s", (CALLER,), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "from +<redacted>"
    assert record.args is None


def test_tracebacks_keep_where_they_happened_and_lose_the_numbers(log_stream: io.StringIO) -> None:
    log = logging.getLogger("bridge.http")
    try:
        raise ValueError(f"bad number, line {CALLER}")
    except ValueError:
        log.exception("request failed")
    text = log_stream.getvalue()
    assert CALLER not in text and CALLER[1:] not in text
    assert "ValueError: bad number, line +<redacted>" in text
    frame = re.search(r'File "[^"]*test_logs\.py", line (\d+), in ', text)
    assert frame is not None, text  # the line number a reader needs is there
    assert int(frame.group(1)) > 0


def test_scrub_keeps_short_numbers_outside_keys() -> None:
    assert scrub("turn 2 of 12") == "turn 2 of 12"
    assert scrub(f"call {CALLER}") == "call +<redacted>"


def test_scrub_keeps_uuids_but_not_numbers_next_to_them() -> None:
    sid = "3d424860-17c1-4407-b6a1-02e9702c9fa9"
    assert scrub(f"/ac/r/conversation/{sid}/activities") == f"/ac/r/conversation/{sid}/activities"
    assert scrub(f"{sid} from {CALLER}") == f"{sid} from +<redacted>"
    assert CALLER[1:] not in scrub(f"id {CALLER[1:]}-1991-4921-1549-119914921154")
    assert "1991" not in scrub("id 21154591-1991-4921-1549-119914921154")
    assert "4921" not in scrub("x4921154591-1991-4921-1549-11991492115a")


async def test_a_real_call_logs_with_its_context_and_without_the_caller(
    log_stream: io.StringIO, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config("ws://127.0.0.1:1/nothing"))
    vaic = VaicClient(f"{bridge.url}/ac/r", "tok", session=bridge.http)
    assert (await vaic.create()).status == 200
    start = {
        "type": "event",
        "name": "start",
        "parameters": {"caller": CALLER, "callee": "+18005550100"},
    }
    reply = await vaic.send([start, {"type": "event", "name": "DTMF", "value": DTMF}])
    assert reply.status == 200
    text = log_stream.getvalue()
    lines = [line for line in text.splitlines() if "could not start the call" in line]
    assert len(lines) == 1, text
    assert f" route=r conversation={vaic.conversation_id} call_sid=" in lines[0]
    assert CALLER[1:] not in text and DTMF not in text


def test_a_scrubbed_record_passes_as_it_is(log_stream: io.StringIO) -> None:
    """`extra={SCRUBBED: True}` (bridge/access_log.py): no scrub, so a status stays a status."""
    log = logging.getLogger("aiohttp.access")
    log.info("POST activities status=200 ms=123.4", extra={SCRUBBED: True})
    assert (
        log_stream.getvalue()
        .splitlines()[-1]
        .endswith(" INFO aiohttp.access POST activities status=200 ms=123.4")
    )


def test_the_mark_does_not_cover_args_exceptions_or_stacks(log_stream: io.StringIO) -> None:
    log = logging.getLogger("bridge.http")
    log.info("from %s", CALLER, extra={SCRUBBED: True})
    try:
        raise ValueError(CALLER)
    except ValueError:
        log.exception("failed", extra={SCRUBBED: True})
    log.info("stack", stack_info=True, extra={SCRUBBED: True})  # the stack quotes +4921154591991
    log.info(f"not marked {CALLER}", extra={SCRUBBED: False})
    text = log_stream.getvalue()
    assert CALLER[1:] not in text
    assert "from +<redacted>" in text and "ValueError: +<redacted>" in text
    assert "# the stack quotes +<redacted>" in text


def test_time_is_utc_to_the_millisecond_across_seconds() -> None:
    formatter = ContextFormatter()

    def at(created: float) -> str:
        record = logging.LogRecord("bridge", logging.INFO, __file__, 1, "m", None, None)
        record.created = created
        return formatter.formatTime(record)

    base = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC).timestamp()
    assert at(base + 0.123) == "2026-11-25T10:00:00.123Z"
    assert at(base + 0.9995) == "2026-11-25T10:00:00.999Z"
    assert at(base + 1.004) == "2026-11-25T10:00:01.004Z"
    assert at(base + 0.5) == "2026-11-25T10:00:00.500Z"  # an earlier second again
    assert at(base + 59.9999996) == "2026-11-25T10:01:00.000Z"  # rounds up into the next
    for offset in (0.0, 0.001, 0.0125, 0.9999994, 3599.9876):
        old = datetime.fromtimestamp(base + offset, UTC)  # what the formatter did before
        expected = old.strftime("%Y-%m-%dT%H:%M:%S.") + f"{old.microsecond // 1000:03d}Z"
        assert at(base + offset) == expected


def test_a_conversation_id_that_is_a_phone_number_never_reaches_the_log(
    log_stream: io.StringIO,
) -> None:
    kept = "1227ad5d-9d72-4da9-9cc4-dc9f116f8c96"
    logging.getLogger("bridge.session").info(
        "turn", extra={"route": "r", "conversation": "+4930123456789", "call_sid": kept}
    )
    line = log_stream.getvalue()
    assert "4930123456789" not in line and "123456" not in line
    assert f"call_sid={kept}" in line
