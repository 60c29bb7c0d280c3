"""Loader: shipped mappings load; every kind of bad file is a MappingError naming file and path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import bridge
from bridge.errors import MappingError
from bridge.mapping import SHIPPED_DIR, check_mappings, load_mappings

ALL_NODES = {
    "say", "play", "hangup", "transfer_dial", "transfer_refer", "session_config",
    "call_recording", "send_metadata", "dtmf", "gather", "tag",
    "start", "speech_input", "dtmf_input", "no_input", "transfer_status", "play_failed",
    "call_end", "call_events", "pause", "sip_decline", "answer", "alert", "leave", "redirect",
}  # fmt: skip

SAY = """\
node: say
description: say to message
direction: to_audiocodes
match: {verb: say}
output:
  - foreach: text
    emit:
      type: message
      text: $item
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def only_error(directory: Path) -> MappingError:
    errors = check_mappings(directory)
    assert len(errors) == 1, [str(e) for e in errors]
    with pytest.raises(MappingError):
        load_mappings(directory)
    return errors[0]


def test_shipped_mappings_load_and_cover_every_node() -> None:
    mappings = load_mappings()
    assert set(mappings.nodes) == ALL_NODES
    assert check_mappings(None) == []
    assert Path(bridge.__file__).parent / "mappings" == SHIPPED_DIR
    assert mappings.directory == SHIPPED_DIR


def test_a_copy_of_the_shipped_dir_loads(tmp_path: Path) -> None:
    for path in SHIPPED_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    assert set(load_mappings(tmp_path).nodes) == ALL_NODES


def test_minimal_file_loads(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", SAY)
    assert load_mappings(tmp_path).nodes == ("say",)


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        (SAY + "bogus: 1\n", "bogus", "unknown key"),
        (SAY.replace("foreach: text", "foreach: text\n    bogus: 1"), "output[0].bogus", "unknown"),
        (
            SAY + "compare: {noise: [a], normalize: {text: [strip]}, extra: 1}\n",
            "compare.extra",
            "",
        ),
        (SAY.replace("node: say", "node: Say Node"), "node", "pattern"),
        (SAY.replace("direction: to_audiocodes", "direction: sideways"), "direction", ""),
        (SAY.replace("description: say to message\n", ""), "description", "required"),
    ],
)
def test_schema_errors_name_the_field(tmp_path: Path, text: str, path: str, reason: str) -> None:
    file = write(tmp_path, "say.yaml", text)
    error = only_error(tmp_path)
    assert error.file == str(file)
    assert error.path == path
    assert reason.lower() in error.reason.lower()


def test_unknown_transform_lists_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", SAY.replace("$item", '"$item | shout"'))
    error = only_error(tmp_path)
    assert error.path == "output[0].emit.text"
    assert "unknown transform 'shout'" in error.reason
    assert "seconds_to_ms" in error.reason and "strip_ssml" in error.reason


def test_unknown_normalizer(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", SAY + "compare:\n  normalize:\n    text: [strip, nope]\n")
    error = only_error(tmp_path)
    assert error.path == "compare.normalize.text[1]"
    assert "unknown transform 'nope'" in error.reason


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ('"$a..b"', "bad path"),
        ('"$a[x]"', "bad path"),
        ("$ctx.nope", "ctx.<key> must be one of"),
        ("$ctx", "ctx.<key> must be one of"),
        ("$let.nothing", "unknown let name"),
    ],
)
def test_bad_paths(tmp_path: Path, template: str, reason: str) -> None:
    write(tmp_path, "say.yaml", SAY.replace("text: $item", f"text: $item\n      x: {template}"))
    error = only_error(tmp_path)
    assert error.path == "output[0].emit.x"
    assert reason in error.reason


def test_item_outside_foreach(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", SAY.replace("foreach: text\n    emit", "emit"))
    error = only_error(tmp_path)
    assert error.path == "output[0].emit.text"
    assert "only defined inside foreach" in error.reason


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ("{$form: a}", "output[0].emit.x.$form", "unknown directive"),
        ("{$from: a, $value: 1}", "output[0].emit.x", "exactly one of"),
        ("{$from: a, plain: 1}", "output[0].emit.x", "mixes"),
        ("null", "output[0].emit.x", "null"),
        ("{$from: a, $when: {a: maybe}}", "output[0].emit.x.$when.a", "predicate"),
        ("{$from: a, $when: {$or: []}}", "output[0].emit.x.$when.$or", "unknown operator"),
        ("{$from: a, $when: {a: {in: 3}}}", "output[0].emit.x.$when.a.in", "must be a list"),
        ("{$from: a, $map: [1]}", "output[0].emit.x.$map", "must be an object"),
        ("{$from: a, $required: yes please}", "output[0].emit.x.$required", "true or false"),
        ("{$args: a}", "output[0].emit.x.$args", "list of paths"),
    ],
)
def test_bad_expressions(tmp_path: Path, value: str, path: str, reason: str) -> None:
    write(tmp_path, "say.yaml", SAY.replace("text: $item", f"text: $item\n      x: {value}"))
    error = only_error(tmp_path)
    assert (error.path, reason in error.reason) == (path, True), str(error)


def test_require_must_name_an_emit_field(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", SAY.replace("foreach: text", "foreach: text\n    require: [nope]"))
    error = only_error(tmp_path)
    assert error.path == "output[0].require"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", SAY + "compare: [unclosed\n")
    error = only_error(tmp_path)
    assert error.path.startswith("line ")
    assert "YAML syntax error" in error.reason


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", SAY + "node: again\n")
    error = only_error(tmp_path)
    assert error.path.startswith("line 10")
    assert "duplicate key 'node'" in error.reason


def test_file_that_is_not_an_object(tmp_path: Path) -> None:
    write(tmp_path, "say.yaml", "- just a list\n")
    assert only_error(tmp_path).path == "(file)"


def test_duplicate_node_names(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SAY)
    write(tmp_path, "b.yaml", SAY.replace("verb: say", "verb: play"))
    error = only_error(tmp_path)
    assert error.file.endswith("b.yaml")
    assert error.path == "node"
    assert "duplicate node 'say'" in error.reason and "a.yaml" in error.reason


def test_ambiguous_matches(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SAY)
    write(tmp_path, "b.yaml", SAY.replace("node: say", "node: say_again"))
    error = only_error(tmp_path)
    assert error.path == "match"
    assert "same input as node 'say'" in error.reason


def test_same_verb_with_different_conditions_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SAY)
    other = SAY.replace("node: say", "node: say_list").replace(
        "match: {verb: say}", "match: {verb: say, when: {loop: present}}"
    )
    write(tmp_path, "b.yaml", other)
    assert len(load_mappings(tmp_path)) == 2


def test_ambiguous_activity_matches(tmp_path: Path) -> None:
    base = """\
node: {node}
description: d
direction: to_voicegateway
match: {{type: event, name: {names}}}
message: input
output: [{{emit: {{reason: timeout}}}}]
"""
    write(tmp_path, "a.yaml", base.format(node="a", names="[DTMF, dtmf]"))
    write(tmp_path, "b.yaml", base.format(node="b", names="dtmf"))
    error = only_error(tmp_path)
    assert error.file.endswith("b.yaml")
    assert "same input as node 'a'" in error.reason


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (SAY.replace("direction: to_audiocodes", "direction: to_voicegateway"), "match.verb"),
        (SAY + "message: input\n", "message"),
        (SAY.replace("match: {verb: say}", "match: {type: event}"), "match.verb"),
    ],
)
def test_direction_specific_keys(tmp_path: Path, text: str, path: str) -> None:
    write(tmp_path, "say.yaml", text)
    assert path in [e.path for e in check_mappings(tmp_path)]


def test_to_voicegateway_needs_message_and_event_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        "x.yaml",
        "node: x\ndescription: d\ndirection: to_voicegateway\nmatch: {type: event}\n"
        "output: [{emit: {reason: timeout}}]\n",
    )
    paths = {e.path for e in check_mappings(tmp_path)}
    assert paths == {"match.name", "message"}


def test_nested_verb_needs_a_mapping(tmp_path: Path) -> None:
    write(
        tmp_path,
        "gather.yaml",
        "node: gather\ndescription: d\ndirection: to_audiocodes\nmatch: {verb: gather}\n"
        "nested: {verbs: [say], attach_to: activityParams}\n",
    )
    error = only_error(tmp_path)
    assert (error.path, error.reason) == ("nested.verbs", "no mapping for verb 'say'")


def test_check_collects_errors_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SAY + "bogus: 1\n")
    write(tmp_path, "b.yaml", SAY.replace("node: say", "node: b").replace("$item", '"$item|x"'))
    write(tmp_path, "c.yaml", "node: [\n")
    write(tmp_path, "README.md", "not a mapping")
    errors = check_mappings(tmp_path)
    assert sorted(Path(e.file).name for e in errors) == ["a.yaml", "b.yaml", "c.yaml"]
    assert all(str(e).startswith(e.file + ": ") for e in errors)


def test_empty_or_missing_directory(tmp_path: Path) -> None:
    assert only_error(tmp_path).reason == "no mapping files"
    assert check_mappings(tmp_path / "nope")[0].reason == "not a directory"


def test_compare_hints() -> None:
    mappings = load_mappings()
    noise, _normalizers = mappings.compare_hints("play")
    assert "activityParams.playUrlMediaFormat" in noise
    assert "activityParams.playUrlCaching" in noise
    say = mappings.compare_hints("say")
    assert say.noise == ()
    ssml = "<speak><voice name='v'>Hello \n  world</voice></speak>"
    assert say.normalizers["text"](ssml) == "Hello world"
    assert mappings.compare_hints("unmapped") == ((), {})
