"""Load a directory of mapping files into a `MappingSet`, failing fast on any invalid file.

Reads YAML (duplicate keys are errors), validates each file's shape, compiles its templates, then
checks across files: unique node names, no two files matching the same input the same way, nested
verbs that have a mapping. Every problem is a `MappingError(file, field path, reason)`.
Reads files; called at start-up and on reload, never per turn.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import bridge
from bridge.errors import MappingError
from bridge.mapping.engine import (
    UNMAPPED_NODE,
    CompareHints,
    CompiledMapping,
    Cond,
    Scope,
    compile_mapping,
)
from bridge.mapping.schema import Direction, MappingFile

SHIPPED_DIR = Path(bridge.__file__).parent / "mappings"


class MappingSet:
    """The compiled mappings of one directory, indexed for the engine."""

    def __init__(self, mappings: Sequence[CompiledMapping], directory: Path) -> None:
        self.directory = directory
        self.mappings = tuple(mappings)
        self._by_node = {m.node: m for m in self.mappings}
        by_verb: dict[str, list[CompiledMapping]] = {}
        by_activity: dict[tuple[str, str | None], list[CompiledMapping]] = {}
        for m in self.mappings:
            if m.direction is Direction.TO_AUDIOCODES and m.verb is not None:
                by_verb.setdefault(m.verb, []).append(m)
            for key in m.activity_keys:
                by_activity.setdefault(key, []).append(m)
        self.by_verb = {k: tuple(v) for k, v in by_verb.items()}
        self.by_activity = {k: tuple(v) for k, v in by_activity.items()}
        self.by_emitted = _emitted_index(self.mappings)
        self._by_emitted_folded = {
            (kind, name.casefold() if name else name): nodes
            for (kind, name), nodes in self.by_emitted.items()
        }

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._by_node)

    def get(self, node: str) -> CompiledMapping | None:
        return self._by_node.get(node)

    def __contains__(self, node: object) -> bool:
        return node in self._by_node

    def __iter__(self) -> Iterator[CompiledMapping]:
        return iter(self.mappings)

    def __len__(self) -> int:
        return len(self.mappings)

    def compare_hints(self, node: str) -> CompareHints:
        """Noise paths and per-path normalisers for comparing one node's activities.

        An unknown node (e.g. `unmapped`) has no hints.
        """
        mapping = self._by_node.get(node)
        if mapping is None:
            return CompareHints((), {})
        return CompareHints(mapping.noise, mapping.normalizers)

    def node_for_activity(self, activity: Mapping[str, Any]) -> str:
        """The to_audiocodes node that produces (or would produce) this AudioCodes activity.

        Reverse index of the files' emit literals: `message` → say, `event playUrl` → play, ...
        Event names are matched exactly, else case-insensitively. Files with `nested` (gather) are
        not indexed: their activities are their nested verbs' (say, play) or a `config` event
        (session_config). A file with `compare.identify` owns exactly the activities that
        condition holds for (pause: a message of SSML breaks only). When several files emit the
        same type and name (transfer_dial and transfer_refer), the one whose own fields (fields
        the others never emit, e.g. `activityParams.transferReferredByURL`) are present in the
        activity wins; with none present, the file with the fewest own fields (transfer_dial).
        No file → `unmapped`.
        Never raises.
        """
        if not isinstance(activity, Mapping):
            return UNMAPPED_NODE
        kind = activity.get("type")
        name = activity.get("name") if kind == "event" else None
        if not isinstance(kind, str) or (kind == "event" and not isinstance(name, str)):
            return UNMAPPED_NODE
        candidates = self.by_emitted.get((kind, name))
        if candidates is None:
            folded = name.casefold() if isinstance(name, str) else None
            candidates = self._by_emitted_folded.get((kind, folded))
        if not candidates:
            return UNMAPPED_NODE
        general = []
        for node, own, identify in candidates:
            if identify is None:
                general.append((node, own))
            elif _holds(identify, activity):
                return node
        if len(general) <= 1:
            return general[0][0] if general else UNMAPPED_NODE
        best = max(general, key=lambda c: (sum(_present(activity, p) for p in c[1]), -len(c[1])))
        return best[0]


# (type, event name) -> ((node, the paths only that node emits, its identify), ...), file order.
_EmittedIndex = dict[tuple[str, str | None], tuple[tuple[str, tuple[str, ...], Cond | None], ...]]


def _emitted_index(mappings: Sequence[CompiledMapping]) -> _EmittedIndex:
    grouped: dict[tuple[str, str | None], list[CompiledMapping]] = {}
    for m in mappings:
        if m.direction is Direction.TO_AUDIOCODES and not m.nested_verbs:
            for shape in m.activity_shapes:
                grouped.setdefault(shape, []).append(m)
    index: _EmittedIndex = {}
    for shape, group in grouped.items():
        entries = []
        for m in group:
            others = {p for o in group if o is not m for p in o.emitted_paths}
            entries.append((m.node, tuple(sorted(m.emitted_paths - others)), m.identify))
        index[shape] = tuple(entries)
    return index


def _holds(identify: Cond, activity: Mapping[str, Any]) -> bool:
    try:
        return identify(Scope(activity, {}))
    except Exception:  # a condition that cannot read this activity does not claim it
        return False


def _present(activity: Mapping[str, Any], path: str) -> bool:
    value: Any = activity
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return False
        value = value[key]
    return value is not None


def load_mappings(directory: Path | None = None) -> MappingSet:
    """Every mapping file in `directory` (default: the shipped ones); raises the first error."""
    mapping_set, errors = _load(directory)
    if errors:
        raise errors[0]
    return mapping_set


def check_mappings(directory: Path | None = None) -> list[MappingError]:
    """Every error in every mapping file of `directory`; empty when all are valid."""
    return _load(directory)[1]


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _loc(parts: Sequence[int | str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _parse(path: Path) -> tuple[MappingFile | None, list[MappingError]]:
    file = str(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        return None, [MappingError(file, "(file)", f"cannot read: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, [MappingError(file, "(file)", "not UTF-8 text")]
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors fail this way on a tagged value they cannot build
        # (`!!timestamp xyz`, `!!bool maybe`, `!!int abc`)
        return None, [
            MappingError(
                file, "(file)", f"invalid tagged YAML value (!!timestamp, !!int, ...): {exc}"
            )
        ]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [MappingError(file, where, f"YAML syntax error: {problem}")]
    if not isinstance(raw, dict):
        return None, [MappingError(file, "(file)", "a mapping file is a YAML object")]
    try:
        return MappingFile.model_validate(raw), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            errors.append(MappingError(file, _loc(err["loc"]), reason))
        return None, errors


def _load(directory: Path | None) -> tuple[MappingSet, list[MappingError]]:
    base = SHIPPED_DIR if directory is None else Path(directory)
    errors: list[MappingError] = []
    if not base.is_dir():
        return MappingSet((), base), [MappingError(str(base), "(dir)", "not a directory")]
    paths = sorted([*base.glob("*.yaml"), *base.glob("*.yml")])
    if not paths:
        return MappingSet((), base), [MappingError(str(base), "(dir)", "no mapping files")]
    compiled: list[CompiledMapping] = []
    for path in paths:
        try:
            model, parse_errors = _parse(path)
            errors.extend(parse_errors)
            if model is None:
                continue
            mapping, compile_errors = compile_mapping(model, str(path))
        except RecursionError:  # YAML nested beyond what the loader and compiler can walk
            errors.append(MappingError(str(path), "(file)", "nested too deeply"))
            continue
        errors.extend(compile_errors)
        if mapping is not None:
            compiled.append(mapping)
    errors.extend(_cross_check(compiled))
    return MappingSet(compiled, base), errors


def _cross_check(mappings: Sequence[CompiledMapping]) -> list[MappingError]:
    errors: list[MappingError] = []
    by_node: dict[str, CompiledMapping] = {}
    by_match: dict[tuple[object, ...], CompiledMapping] = {}
    verbs = {m.verb for m in mappings if m.verb is not None}
    for m in mappings:
        other = by_node.setdefault(m.node, m)
        if other is not m:
            errors.append(MappingError(m.file, "node", f"duplicate node {m.node!r} ({other.file})"))
        keys: list[tuple[object, ...]] = (
            [("verb", m.verb)]
            if m.verb is not None
            else [("activity", *k) for k in m.activity_keys]
        )
        for key in keys:
            other = by_match.setdefault((*key, m.when_key), m)
            if other is not m:
                reason = f"matches the same input as node {other.node!r} ({other.file}); "
                errors.append(MappingError(m.file, "match", reason + "add or change match.when"))
        for verb in m.nested_verbs:
            if verb not in verbs:
                errors.append(MappingError(m.file, "nested.verbs", f"no mapping for verb {verb!r}"))
            elif any(n.nested_verbs for n in mappings if n.verb == verb):
                errors.append(MappingError(m.file, "nested.verbs", f"{verb!r} nests verbs itself"))
    return errors
