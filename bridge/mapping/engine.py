"""Compile mapping-file templates into callables, and run them to translate one verb or activity.

Compilation (`compile_mapping`) happens once at load time and reports every problem as a
`MappingError`. Translation (`Engine`) is per turn: it only walks paths and builds dicts, never
validates with pydantic and never raises — bad input becomes a `Translation` with result `error`,
input no mapping matches becomes result `unmapped` (node label `"unmapped"`). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeGuard

from bridge.errors import MappingError
from bridge.mapping.schema import (
    CONTEXT_KEYS,
    ActivityType,
    Direction,
    MappingFile,
    MessageKind,
)
from bridge.mapping.transforms import TRANSFORMS, Transform, TransformError

if TYPE_CHECKING:
    from bridge.mapping.loader import MappingSet

Result = Literal["ok", "unmapped", "error"]
UNMAPPED_NODE = "unmapped"


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Scope:
    """What a template can read during one translation."""

    __slots__ = ("ctx", "index", "input", "item", "lets")

    def __init__(self, input_: Any, ctx: Mapping[str, Any]) -> None:
        self.input = input_
        self.ctx = ctx
        self.item: Any = MISSING
        self.index: Any = MISSING
        self.lets: dict[str, Any] = {}


Builder = Callable[[Scope], Any]
Cond = Callable[[Scope], bool]


class _FieldError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Translation:
    """One node's translation of one verb (to_audiocodes) or activity (to_voicegateway)."""

    node: str
    result: Result
    outputs: tuple[dict[str, Any], ...] = ()
    message: str | None = None
    error: str | None = None

    @property
    def hook_kind(self) -> str | None:
        """Alias of `message` (the name `docs/internals.md` uses)."""
        return self.message


class CompareHints(NamedTuple):
    """Per-node comparison hints: field paths to ignore, and normalisers per field path."""

    noise: tuple[str, ...]
    normalizers: Mapping[str, Callable[[Any], Any]]


@dataclass(frozen=True, slots=True)
class CompiledOutput:
    emit: Builder
    when: Cond | None
    foreach: Builder | None
    require: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompiledMapping:
    node: str
    file: str
    direction: Direction
    message: MessageKind | None
    verb: str | None
    activity_keys: tuple[tuple[str, str | None], ...]
    when: Cond | None
    when_key: str
    lets: tuple[tuple[str, Builder], ...]
    nested_verbs: tuple[str, ...]
    attach_to: str | None
    attach: Builder | None
    outputs: tuple[CompiledOutput, ...]
    noise: tuple[str, ...]
    normalizers: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    # to_audiocodes only: the (type, event name) of each activity the outputs can emit, read from
    # the emit literals (a `$map`'s values count), and every field path an emit can fill. The
    # comparison uses them to tell which node an activity from either path belongs to.
    activity_shapes: tuple[tuple[str, str | None], ...] = ()
    emitted_paths: frozenset[str] = frozenset()
    # `compare.identify`: the activities of this shape that are this node's (others never are)
    identify: Cond | None = None


# --- paths -------------------------------------------------------------------------------------

_NAME = r"[^.\[\]\s|$]+"
_PATH = re.compile(rf"{_NAME}(?:\.{_NAME}|\[(?:-?\d+|\*)\])*")
_TOKEN = re.compile(rf"\.?({_NAME})|\[(-?\d+|\*)\]")
_KEY, _INDEX, _ALL = 0, 1, 2
Step = tuple[int, Any]


def parse_path(text: str) -> tuple[Step, ...]:
    """`a.b[0].c[*]` → steps; raises ValueError on bad syntax."""
    if not isinstance(text, str) or not _PATH.fullmatch(text):
        raise ValueError(f"bad path {text!r} (expected dotted names with optional [n] or [*])")
    steps: list[Step] = []
    for m in _TOKEN.finditer(text):
        name, index = m.group(1), m.group(2)
        if name is not None:
            steps.append((_KEY, name))
        elif index == "*":
            steps.append((_ALL, None))
        else:
            steps.append((_INDEX, int(index)))
    return tuple(steps)


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # A dict first: `isinstance(x, Mapping)` goes through ABC machinery, and nearly all is dicts.
    return isinstance(value, (dict, Mapping))


def _walk_keys(value: Any, keys: tuple[str, ...]) -> Any:
    """`_walk` of a path of names only (most paths), without the per-step dispatch."""
    for key in keys:
        if not _is_mapping(value):
            return MISSING
        value = value.get(key)
        if value is None:
            return MISSING
    return value


def _walk(value: Any, steps: tuple[Step, ...]) -> Any:
    for pos, (kind, key) in enumerate(steps):
        if value is None:
            return MISSING
        if kind == _KEY:
            if not _is_mapping(value):
                return MISSING
            value = value.get(key)
        elif kind == _INDEX:
            if not isinstance(value, list) or not -len(value) <= key < len(value):
                return MISSING
            value = value[key]
        else:
            if not isinstance(value, list):
                return MISSING
            rest = steps[pos + 1 :]
            found = [v for v in (_walk(e, rest) for e in value) if v is not MISSING]
            return found if found else MISSING
    return MISSING if value is None else value


# --- compiler ----------------------------------------------------------------------------------

_EXPR_KEYS = frozenset(
    {"$from", "$args", "$value", "$via", "$map", "$default", "$when", "$required"}
)
_BOOL_OPS = frozenset({"$any", "$all", "$not"})
_WORD_PREDICATES = frozenset({"present", "absent", "truthy", "falsy"})
_DICT_PREDICATES = frozenset({"equals", "not_equals", "in", "not_in", "contains", "matches"})
_LET_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _fresh(value: Any) -> Any:
    """A literal default, rebuilt so callers may mutate what they get."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


def _const(value: Any) -> Builder:
    if isinstance(value, dict | list):
        return lambda _s: _fresh(value)
    return lambda _s: value


class _Compiler:
    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[MappingError] = []
        self.lets: set[str] = set()
        self.in_foreach = False

    def fail(self, where: str, reason: str) -> None:
        self.errors.append(MappingError(self.file, where, reason))

    # paths

    def getter(self, text: Any, where: str) -> Builder | None:
        try:
            steps = parse_path(text)
        except ValueError as exc:
            self.fail(where, str(exc))
            return None
        root = steps[0][1] if steps[0][0] == _KEY else None
        rest = steps[1:]
        if root == "ctx":
            if not rest or rest[0][0] != _KEY or rest[0][1] not in CONTEXT_KEYS:
                known = ", ".join(sorted(CONTEXT_KEYS))
                self.fail(where, f"bad path {text!r}: ctx.<key> must be one of: {known}")
                return None
            return lambda s: _walk(s.ctx, rest)
        if root in ("item", "index"):
            if not self.in_foreach:
                self.fail(where, f"bad path {text!r}: {root} is only defined inside foreach")
                return None
            if root == "index":
                return lambda s: s.index
            return lambda s: _walk(s.item, rest)
        if root == "let":
            if not rest or rest[0][0] != _KEY or rest[0][1] not in self.lets:
                known = ", ".join(sorted(self.lets)) or "none"
                self.fail(where, f"bad path {text!r}: unknown let name (defined: {known})")
                return None
            return lambda s: _walk(s.lets, rest)
        if all(kind == _KEY for kind, _ in steps):
            keys = tuple(str(key) for _, key in steps)
            return lambda s: _walk_keys(s.input, keys)
        return lambda s: _walk(s.input, steps)

    def transform(self, name: Any, where: str) -> Transform | None:
        fn = TRANSFORMS.get(name) if isinstance(name, str) else None
        if fn is None:
            known = ", ".join(sorted(TRANSFORMS))
            self.fail(where, f"unknown transform {name!r} (known: {known})")
        return fn

    # templates

    def template(self, value: Any, where: str, out: str) -> Builder:
        if isinstance(value, str):
            if value.startswith("$$"):
                return _const(value[1:])
            if value.startswith("$"):
                path, *names = (p.strip() for p in value[1:].split("|"))
                getter = self.getter(path, where)
                via = tuple((n, fn) for n in names if (fn := self.transform(n, where)))
                if getter is None:
                    return _const(MISSING)
                if not via:
                    return getter
                return _expression(getter, via, None, None, None, False, out)
            return _const(value)
        if isinstance(value, dict):
            directives = [k for k in value if isinstance(k, str) and k.startswith("$")]
            if directives:
                if len(directives) != len(value):
                    self.fail(where, "an object mixes $-directives and output fields")
                    return _const(MISSING)
                return self.expression(value, where, out)
            return self._object(value, where, out)
        if isinstance(value, list):
            items = [self.template(v, f"{where}[{i}]", f"{out}[{i}]") for i, v in enumerate(value)]

            def build_list(s: Scope) -> Any:
                built = [v for v in (b(s) for b in items) if v is not MISSING]
                return built if built else MISSING

            return build_list
        if value is None:
            self.fail(where, "null is not a template value (leave the field out instead)")
        return _const(value)

    def _object(self, value: dict[Any, Any], where: str, out: str) -> Builder:
        fields: list[tuple[str, Builder]] = []
        for key, sub in value.items():
            if not isinstance(key, str):
                self.fail(where, f"field name {key!r} is not a string")
                continue
            sub_out = f"{out}.{key}" if out else key
            fields.append((key, self.template(sub, f"{where}.{key}", sub_out)))
        items = tuple(fields)

        def build_object(s: Scope) -> Any:
            built: dict[str, Any] = {}
            for key, builder in items:
                v = builder(s)
                if v is not MISSING:
                    built[key] = v
            return built if built else MISSING

        return build_object

    def expression(self, spec: dict[str, Any], where: str, out: str) -> Builder:
        unknown = [key for key in spec if key not in _EXPR_KEYS]
        for key in unknown:
            known = ", ".join(sorted(_EXPR_KEYS))
            self.fail(f"{where}.{key}", f"unknown directive (known: {known})")
        if unknown:
            return _const(MISSING)
        sources = [k for k in ("$from", "$args", "$value") if k in spec]
        if len(sources) != 1:
            self.fail(where, "an expression needs exactly one of $from, $args, $value")
            return _const(MISSING)
        source = self._source(spec, sources[0], where, out)
        via = self._via(spec.get("$via", []), f"{where}.$via")
        table = spec.get("$map")
        if table is not None and not isinstance(table, dict):
            self.fail(f"{where}.$map", "must be an object")
            table = None
        when = self.condition(spec["$when"], f"{where}.$when") if "$when" in spec else None
        default = spec.get("$default")
        required = spec.get("$required", False)
        if not isinstance(required, bool):
            self.fail(f"{where}.$required", "must be true or false")
        return _expression(source, via, table, when, default, required is True, out)

    def _source(self, spec: dict[str, Any], kind: str, where: str, out: str) -> Builder:
        raw = spec[kind]
        here = f"{where}.{kind}"
        if kind == "$value":
            return self.template(raw, here, out)
        paths = raw if isinstance(raw, list) else [raw]
        if not paths or (kind == "$args" and not isinstance(raw, list)):
            self.fail(here, "must be a path or a non-empty list of paths")
            return _const(MISSING)
        getters = [self.getter(p, f"{here}[{i}]") for i, p in enumerate(paths)]
        found = tuple(g for g in getters if g is not None)
        if kind == "$args":

            def build_args(s: Scope) -> Any:
                return [None if v is MISSING else v for v in (g(s) for g in found)]

            return build_args
        if len(found) == 1:
            return found[0]

        def coalesce(s: Scope) -> Any:
            for g in found:
                v = g(s)
                if v is not MISSING:
                    return v
            return MISSING

        return coalesce

    def _via(self, raw: Any, where: str) -> tuple[tuple[str, Transform], ...]:
        names = raw if isinstance(raw, list) else [raw]
        chain: list[tuple[str, Transform]] = []
        for i, name in enumerate(names):
            fn = self.transform(name, f"{where}[{i}]" if isinstance(raw, list) else where)
            if fn is not None:
                chain.append((name, fn))
        return tuple(chain)

    # conditions

    def condition(self, spec: Any, where: str) -> Cond:
        if not isinstance(spec, dict) or not spec:
            self.fail(where, "a condition is a non-empty object of path: predicate")
            return lambda _s: False
        parts: list[Cond] = []
        for key, pred in spec.items():
            here = f"{where}.{key}"
            if key in ("$any", "$all"):
                if not isinstance(pred, list) or not pred:
                    self.fail(here, "must be a non-empty list of conditions")
                    continue
                subs = tuple(self.condition(c, f"{here}[{i}]") for i, c in enumerate(pred))
                parts.append(_any_of(subs) if key == "$any" else _all_of(subs))
            elif key == "$not":
                parts.append(_negate(self.condition(pred, here)))
            elif isinstance(key, str) and key.startswith("$"):
                self.fail(here, "unknown operator (known: $any, $all, $not)")
            else:
                getter = self.getter(key, here)
                test = self._predicate(pred, here)
                if getter is not None and test is not None:
                    parts.append(_test(getter, test))
        if not parts:
            return lambda _s: False
        return parts[0] if len(parts) == 1 else _all_of(tuple(parts))

    def _predicate(self, pred: Any, where: str) -> Callable[[Any], bool] | None:
        if isinstance(pred, str) and pred in _WORD_PREDICATES:
            if pred == "present":
                return lambda v: v is not MISSING
            if pred == "absent":
                return lambda v: v is MISSING
            if pred == "truthy":
                return lambda v: v is not MISSING and bool(v)
            return lambda v: v is MISSING or not v
        if not isinstance(pred, dict) or len(pred) != 1 or next(iter(pred)) not in _DICT_PREDICATES:
            words = ", ".join(sorted(_WORD_PREDICATES))
            ops = ", ".join(sorted(_DICT_PREDICATES))
            self.fail(where, f"a predicate is one of {words} or an object with one of {ops}")
            return None
        op, arg = next(iter(pred.items()))
        if op == "equals":
            return lambda v: v is not MISSING and _same(v, arg)
        if op == "not_equals":
            return lambda v: v is MISSING or not _same(v, arg)
        if op in ("in", "not_in"):
            if not isinstance(arg, list):
                self.fail(f"{where}.{op}", "must be a list")
                return None
            choices = tuple(arg)
            if op == "in":
                return lambda v: v is not MISSING and any(_same(v, c) for c in choices)
            return lambda v: v is MISSING or not any(_same(v, c) for c in choices)
        if op == "matches":
            try:
                pattern = re.compile(arg) if isinstance(arg, str) else None
            except re.error as exc:
                self.fail(f"{where}.matches", f"invalid regular expression: {exc}")
                return None
            if pattern is None:
                self.fail(f"{where}.matches", "must be a regular expression (a string)")
                return None
            return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None

        def contains(v: Any) -> bool:
            if isinstance(v, list):
                return any(_same(e, arg) for e in v)
            return isinstance(v, str) and isinstance(arg, str) and arg in v

        return contains


def _any_of(conds: tuple[Cond, ...]) -> Cond:
    return lambda s: any(c(s) for c in conds)


def _all_of(conds: tuple[Cond, ...]) -> Cond:
    return lambda s: all(c(s) for c in conds)


def _negate(cond: Cond) -> Cond:
    return lambda s: not cond(s)


def _test(getter: Builder, test: Callable[[Any], bool]) -> Cond:
    return lambda s: test(getter(s))


def _expression(
    source: Builder,
    via: tuple[tuple[str, Transform], ...],
    table: dict[Any, Any] | None,
    when: Cond | None,
    default: Any,
    required: bool,
    out: str,
) -> Builder:
    def build(s: Scope) -> Any:
        if when is not None and not when(s):
            return MISSING
        v = source(s)
        if v is not MISSING:
            for name, fn in via:
                try:
                    v = fn(v)
                except TransformError as exc:
                    raise _FieldError(out, str(exc)) from None
                except Exception as exc:
                    raise _FieldError(out, f"{name} failed ({type(exc).__name__})") from None
                if v is None:
                    v = MISSING
                    break
            if v is not MISSING and table is not None:
                try:
                    v = table.get(v, MISSING)
                except TypeError:
                    v = MISSING
        if v is MISSING:
            if default is not None:
                return _fresh(default)
            if required:
                raise _FieldError(out, "required value missing or not recognised")
        return v

    return build


def _when_key(when: Any) -> str:
    return repr(when)


def compile_mapping(
    model: MappingFile, file: str
) -> tuple[CompiledMapping | None, list[MappingError]]:
    """Check one parsed mapping file beyond its schema and compile it; returns every error."""
    c = _Compiler(file)
    match = model.match
    verb: str | None = None
    keys: list[tuple[str, str | None]] = []
    if model.direction is Direction.TO_AUDIOCODES:
        if not match.verb:
            c.fail("match.verb", "required for direction to_audiocodes")
        verb = match.verb
        for extra in ("type", "name"):
            if getattr(match, extra) is not None:
                c.fail(f"match.{extra}", "only for direction to_voicegateway")
        if model.message is not None:
            c.fail("message", "only for direction to_voicegateway")
    else:
        if match.verb is not None:
            c.fail("match.verb", "only for direction to_audiocodes")
        if match.type is None:
            c.fail("match.type", "required for direction to_voicegateway")
        elif match.type is ActivityType.EVENT:
            names = match.name if isinstance(match.name, list) else [match.name]
            if not names or any(not isinstance(n, str) or not n for n in names):
                c.fail("match.name", "event matches need a name or a list of names")
            keys = [("event", n) for n in names if isinstance(n, str)]
        else:
            if match.name is not None:
                c.fail("match.name", "message activities have no name")
            keys = [("message", None)]
        if model.message is None:
            c.fail("message", "required for direction to_voicegateway")
        if model.nested is not None:
            c.fail("nested", "only for direction to_audiocodes")
        if not model.output:
            c.fail("output", "to_voicegateway mappings need at least one output")

    when = c.condition(match.when, "match.when") if match.when is not None else None

    lets: list[tuple[str, Builder]] = []
    for name, value in model.let.items():
        if not _LET_NAME.match(name):
            c.fail(f"let.{name}", "let names are lowercase identifiers")
        lets.append((name, c.template(value, f"let.{name}", name)))
        c.lets.add(name)

    attach: Builder | None = None
    if model.nested is not None and model.nested.attach is not None:
        attach = c.template(model.nested.attach, "nested.attach", model.nested.attach_to)

    outputs: list[CompiledOutput] = []
    for i, spec in enumerate(model.output):
        where = f"output[{i}]"
        out_when = c.condition(spec.when, f"{where}.when") if spec.when is not None else None
        foreach = c.getter(spec.foreach, f"{where}.foreach") if spec.foreach is not None else None
        c.in_foreach = spec.foreach is not None
        emit = c._object(spec.emit, f"{where}.emit", "")
        c.in_foreach = False
        for name in spec.require:
            if name not in spec.emit:
                c.fail(f"{where}.require", f"{name!r} is not a field of emit")
        outputs.append(CompiledOutput(emit, out_when, foreach, tuple(spec.require)))

    identify: Cond | None = None
    if model.compare.identify is not None:
        if model.direction is not Direction.TO_AUDIOCODES:
            c.fail("compare.identify", "only for direction to_audiocodes")
        identify = c.condition(model.compare.identify, "compare.identify")

    for i, path in enumerate(model.compare.noise):
        try:
            parse_path(path)
        except ValueError as exc:
            c.fail(f"compare.noise[{i}]", str(exc))
    normalizers: dict[str, Callable[[Any], Any]] = {}
    for path, names in model.compare.normalize.items():
        try:
            parse_path(path)
        except ValueError as exc:
            c.fail(f"compare.normalize.{path}", str(exc))
        chain = tuple(
            fn
            for j, n in enumerate(names)
            if (fn := c.transform(n, f"compare.normalize.{path}[{j}]")) is not None
        )
        normalizers[path] = _chain(chain)

    if c.errors:
        return None, c.errors
    shapes: tuple[tuple[str, str | None], ...] = ()
    emitted: frozenset[str] = frozenset()
    if model.direction is Direction.TO_AUDIOCODES:
        shapes = _activity_shapes(model)
        emitted = frozenset(p for spec in model.output for p in _template_paths(spec.emit, ""))
    compiled = CompiledMapping(
        node=model.node,
        file=file,
        direction=model.direction,
        message=model.message,
        verb=verb,
        activity_keys=tuple(keys),
        when=when,
        when_key=_when_key(match.when),
        lets=tuple(lets),
        nested_verbs=tuple(model.nested.verbs) if model.nested else (),
        attach_to=model.nested.attach_to if model.nested else None,
        attach=attach,
        outputs=tuple(outputs),
        noise=tuple(model.compare.noise),
        normalizers=normalizers,
        activity_shapes=shapes,
        emitted_paths=emitted,
        identify=identify,
    )
    return compiled, []


def _literal_strings(template: Any) -> list[str]:
    """The string values a template can produce without reading its input (none for a path)."""
    if isinstance(template, str):
        if template.startswith("$$"):
            return [template[1:]]
        return [] if template.startswith("$") else [template]
    if isinstance(template, dict):
        found: list[str] = []
        table = template.get("$map")
        if isinstance(table, dict):
            found.extend(v for v in table.values() if isinstance(v, str))
        if "$value" in template:
            found.extend(_literal_strings(template["$value"]))
        default = template.get("$default")
        if isinstance(default, str):
            found.append(default)
        return found
    return []


def _activity_shapes(model: MappingFile) -> tuple[tuple[str, str | None], ...]:
    shapes: list[tuple[str, str | None]] = []
    for spec in model.output:
        for kind in _literal_strings(spec.emit.get("type")):
            if kind == "event":
                shapes.extend(("event", name) for name in _literal_strings(spec.emit.get("name")))
            else:
                shapes.append((kind, None))
    return tuple(dict.fromkeys(shapes))


def _template_paths(template: Any, prefix: str) -> list[str]:
    """Dotted field paths an output object can fill (an expression or a path is one leaf)."""
    is_object = isinstance(template, dict) and all(
        isinstance(k, str) and not k.startswith("$") for k in template
    )
    if not is_object or not template:
        return [prefix] if prefix else []
    return [
        p for k, v in template.items() for p in _template_paths(v, f"{prefix}.{k}" if prefix else k)
    ]


def _chain(fns: tuple[Transform, ...]) -> Callable[[Any], Any]:
    def normalize(value: Any) -> Any:
        for fn in fns:
            if value is None:
                break
            value = fn(value)
        return value

    return normalize


# --- runtime -----------------------------------------------------------------------------------


def _unmapped(what: str) -> Translation:
    return Translation(UNMAPPED_NODE, "unmapped", error=f"no mapping for {what}")


class Engine:
    """Translates with a loaded `MappingSet`. Thread-safe: holds no per-call state."""

    def __init__(self, mapping_set: MappingSet) -> None:
        self.mappings = mapping_set
        self._by_verb = mapping_set.by_verb
        self._by_activity = mapping_set.by_activity

    def verb_to_activities(
        self, verb: Mapping[str, Any], ctx: Mapping[str, Any]
    ) -> list[Translation]:
        """A normalized verb → one `Translation` per matching node (usually one).

        `config` can match several nodes (session_config, call_recording); each part is counted
        under its own node. No match → one `unmapped` part.
        """
        if not _is_mapping(verb):
            return [Translation(UNMAPPED_NODE, "error", error="verb is not an object")]
        name = verb.get("verb")
        candidates = self._by_verb.get(name) if isinstance(name, str) else None
        if not candidates:
            return [_unmapped(f"verb {name!r}" if isinstance(name, str) else "a verb without name")]
        parts: list[Translation] = []
        for mapping in candidates:
            try:
                if mapping.when is not None and not mapping.when(Scope(verb, ctx)):
                    continue
                outputs = self._to_audiocodes(mapping, verb, ctx)
            except _FieldError as exc:
                parts.append(_error(mapping.node, exc))
                continue
            except Exception as exc:  # a mapping/engine bug must not break the call
                parts.append(_crash(mapping.node, exc))
                continue
            parts.append(Translation(mapping.node, "ok", tuple(outputs)))
        return parts or [_unmapped(f"this form of verb {name!r}")]

    def serves(self, verb: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
        """Whether some mapping file translates this normalized verb (its `when` holds)."""
        name = verb.get("verb")
        candidates = self._by_verb.get(name) if isinstance(name, str) else None
        try:
            return any(m.when is None or m.when(Scope(verb, ctx)) for m in candidates or ())
        except Exception:  # a mapping bug: translating will report it; the verb is not served
            return False

    def activity_to_voicegateway(
        self, activity: Mapping[str, Any], ctx: Mapping[str, Any]
    ) -> Translation:
        """An activity from VAIC → the `data` of one jambonz message, and its kind (`message`)."""
        if not _is_mapping(activity):
            return Translation(UNMAPPED_NODE, "error", error="activity is not an object")
        kind = activity.get("type")
        name = activity.get("name") if kind == "event" else None
        if not isinstance(kind, str) or (kind == "event" and not isinstance(name, str)):
            return _unmapped("an activity without type or event name")
        candidates = self._by_activity.get((kind, name), ())
        try:
            matched = [m for m in candidates if m.when is None or m.when(Scope(activity, ctx))]
        except Exception as exc:
            return _crash(candidates[0].node, exc)
        what = f"{kind} activity" if name is None else f"event {name!r}"
        if not matched:
            return _unmapped(what if not candidates else f"this form of {what}")
        if len(matched) > 1:
            nodes = ", ".join(m.node for m in matched)
            return Translation(matched[0].node, "error", error=f"{what} matches {nodes}")
        mapping = matched[0]
        message = str(mapping.message) if mapping.message is not None else None
        try:
            outputs = _emit(mapping, Scope(activity, ctx))
        except _FieldError as exc:
            return _error(mapping.node, exc, message)
        except Exception as exc:
            return _crash(mapping.node, exc, message)
        if len(outputs) != 1:
            reason = f"produced {len(outputs)} messages, expected 1"
            return Translation(mapping.node, "error", message=message, error=reason)
        return Translation(mapping.node, "ok", tuple(outputs), message)

    def _to_audiocodes(
        self, mapping: CompiledMapping, body: Mapping[str, Any], ctx: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        scope = Scope(body, ctx)
        for name, builder in mapping.lets:
            value = builder(scope)
            if value is not MISSING:
                scope.lets[name] = value
        if mapping.nested_verbs:
            produced: list[dict[str, Any]] = []
            for key in mapping.nested_verbs:
                sub = body.get(key)
                if not _is_mapping(sub):
                    continue
                for nested in self._by_verb.get(key, ()):
                    if nested.when is not None and not nested.when(Scope(sub, ctx)):
                        continue
                    try:
                        produced.extend(self._to_audiocodes(nested, sub, ctx))
                    except _FieldError as exc:
                        raise _FieldError(f"{key}.{exc.field}", exc.reason) from None
            if produced:
                if mapping.attach is not None and mapping.attach_to is not None:
                    _attach(produced, mapping.attach_to, mapping.attach(scope))
                return produced
        return _emit(mapping, scope)


def _attach(produced: list[dict[str, Any]], field_name: str, params: Any) -> None:
    if params is MISSING:
        return
    if not isinstance(params, Mapping):
        raise _FieldError(field_name, "attached parameters must be an object")
    last = dict(produced[-1])
    existing = last.get(field_name)
    last[field_name] = {**existing, **params} if isinstance(existing, Mapping) else dict(params)
    produced[-1] = last


def _emit(mapping: CompiledMapping, scope: Scope) -> list[dict[str, Any]]:
    outputs: list[dict[str, Any]] = []
    for spec in mapping.outputs:
        if spec.when is not None and not spec.when(scope):
            continue
        if spec.foreach is None:
            _keep(outputs, spec, spec.emit(scope))
            continue
        items = spec.foreach(scope)
        if items is MISSING:
            continue
        for index, item in enumerate(items if isinstance(items, list) else [items]):
            if item is None:
                continue
            scope.item, scope.index = item, index
            _keep(outputs, spec, spec.emit(scope))
        scope.item = scope.index = MISSING
    return outputs


def _keep(outputs: list[dict[str, Any]], spec: CompiledOutput, built: Any) -> None:
    if built is MISSING:
        return
    for name in spec.require:
        if name not in built:
            return
    outputs.append(built)


def _error(node: str, exc: _FieldError, message: str | None = None) -> Translation:
    return Translation(node, "error", message=message, error=f"{node}: {exc.field}: {exc.reason}")


def _crash(node: str, exc: Exception, message: str | None = None) -> Translation:
    reason = f"{node}: internal error ({type(exc).__name__})"
    return Translation(node, "error", message=message, error=reason)
