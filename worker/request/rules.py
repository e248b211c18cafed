"""The rules engine of the request parser: how a value is shown, checked and refused.

ComfyUI accepts values the model cannot use (width 70, length 6) and silently rounds them, so
every value is checked before ComfyUI sees it. Each problem becomes one clause
``<field>: <value received> <what is wrong> (allowed: <what is allowed>)``; all clauses of a
request are joined with ``"; "`` into a single :class:`InvalidInput`, so a client fixes every
field in one round trip.

Conventions the API documents:

* integers accept JSON integers, integral floats (``832.0``) and decimal strings (``"832"``,
  as the original worker's ``int(...)`` did) — never booleans, never ``832.5``;
* numbers accept integers, floats and numeric strings — never booleans, NaN or infinities.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from worker.errors import InvalidInput
from worker.settings import Limits

if TYPE_CHECKING:
    from worker.tasks.base import Task

_SHOWN_STRING_CHARS = 60


def shown(value: object) -> str:
    """``value`` as a short JSON-like text for an error: strings truncated, containers named."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else f"an integer of {len(str(value))} digits"
    if isinstance(value, float):
        return json.dumps(value)  # NaN / Infinity as JSON writers spell them
    if isinstance(value, str):
        if len(value) <= _SHOWN_STRING_CHARS:
            return json.dumps(value, ensure_ascii=False)
        return json.dumps(value[: _SHOWN_STRING_CHARS - 20], ensure_ascii=False)[:-1] + f'…" ({len(value)} characters)'
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)} items"
    return f"a {type(value).__name__}"


def number(value: float) -> str:
    """A bound as people write it: 100 rather than 100.0."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


#: Problems one error names before it counts the rest.
NAMED_PROBLEMS = 10


class Problems:
    """Collects every problem of a request, so one error names them all — the first
    :data:`NAMED_PROBLEMS` of them, and how many more, so the answer stays small."""

    def __init__(self) -> None:
        self._clauses: list[str] = []
        self._count = 0

    def add(self, path: str, what: str, allowed: str) -> None:
        self._count += 1
        if len(self._clauses) < NAMED_PROBLEMS:
            self._clauses.append(f"{path}: {what} (allowed: {allowed})")

    def __len__(self) -> int:
        return self._count

    def text(self) -> str:
        more = self._count - len(self._clauses)
        return "; ".join(self._clauses) + (f"; and {more} more problem{'s' if more > 1 else ''}" if more else "")

    def raise_if_any(self) -> None:
        if self._count:
            raise InvalidInput(self.text())


#: How deep a job's input may nest objects and lists (a graph's link is 5 levels down).
MAX_NESTING = 32


def nesting_problem(value: object, limit: int = MAX_NESTING) -> str | None:
    """Where ``value`` nests deeper than ``limit`` (a path), without recursion; None when it does not."""
    todo: list[tuple[object, str, int]] = [(value, "", 0)]
    while todo:
        item, path, depth = todo.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                return path or "input"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            todo.extend((child, f"{path}.{str(key)[:20]}".lstrip("."), depth + 1) for key, child in pairs)
    return None


def check_unknown(
    given: Mapping[Any, Any], prefix: str, known: tuple[str, ...], noun: str, problems: Problems
) -> None:
    """Report every key of ``given`` that is not in ``known`` (a typo must not be ignored)."""
    for key in given:
        if key not in known:
            name = str(key) if len(str(key)) <= 40 else str(key)[:39] + "…"
            problems.add(f"{prefix}{name}", f"unknown {noun}", ", ".join(known))


class Rejected(ValueError):
    """A value a parser cannot turn into its type; the message says why ("is not an integer")."""


def parse_int(value: object) -> int:
    """JSON integer, integral float or decimal string (the original worker did ``int(...)``)."""
    if isinstance(value, bool):
        raise Rejected("is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    raise Rejected("is not an integer")


def parse_float(value: object) -> float:
    """JSON number or numeric string; never a boolean, NaN or an infinity."""
    if isinstance(value, bool):
        raise Rejected("is not a number")
    if isinstance(value, (int, float)) or (isinstance(value, str) and _FLOAT_TEXT.fullmatch(value)):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise Rejected("is not a finite number") from None
        if not math.isfinite(number):
            raise Rejected("is not a finite number")
        return number
    raise Rejected("is not a number")


def parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise Rejected("is not a string")
    return value


_INT_TEXT = re.compile(r"\s*[+-]?[0-9]{1,40}\s*")
_FLOAT_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")


@dataclass(frozen=True)
class Context:
    """What a rule may look at: the limits, the task and its defaults, and the options parsed so far."""

    limits: Limits
    #: None for a job with its own graph (only its seed is an option).
    task: Task | None
    defaults: Mapping[str, Any]
    #: The kinds of media the job gives (``image``, ``audio``).
    media: frozenset[str]
    values: dict[str, Any]

    @property
    def has_picture(self) -> bool:
        """An image or a video the size of ``aspect_ratio: auto`` can follow."""
        return bool({"image", "video"} & self.media)

    @property
    def step(self) -> int:
        assert self.task is not None, "sizes are options of a task"
        return self.task.size_step


def const(value: float) -> Callable[[Context], float]:
    return lambda c: value


@dataclass(frozen=True)
class Range:
    """A numeric rule: ``lo <= value <= hi`` and ``value % step == offset``.

    ``lo``, ``hi`` and ``step`` are functions of the context: they come from :class:`Limits`, from
    the task (its size step) or from another option (``split_step <= steps``); ``hi_name`` names
    the upper bound in messages when it is not a constant.
    """

    lo: Callable[[Context], float]
    hi: Callable[[Context], float]
    integer: bool = True
    step: Callable[[Context], int] = const(1)  # type: ignore[assignment]
    offset: int = 0
    hi_name: Callable[[Context], str] | None = None

    def allowed(self, ctx: Context) -> str:
        hi = self.hi_name(ctx) if self.hi_name else number(self.hi(ctx))
        span = f"from {number(self.lo(ctx))} to {hi}"
        step = self.step(ctx)
        if step != 1 and self.offset == 0:
            return f"multiples of {step} {span}"
        if step != 1:
            return f"{step}n+{self.offset} {span} ({_example_series(self, ctx)})"
        return f"{'integers' if self.integer else 'numbers'} {span}"

    def problem(self, value: float, ctx: Context) -> str | None:
        step = self.step(ctx)
        if step != 1 and value % step != self.offset:
            return f"is not a multiple of {step}" if self.offset == 0 else f"is not {step}n+{self.offset}"
        if value < self.lo(ctx):
            return f"is less than {number(self.lo(ctx))}"
        if value > self.hi(ctx):
            return f"is greater than {self.hi_name(ctx) if self.hi_name else number(self.hi(ctx))}"
        return None


def _example_series(rule: Range, ctx: Context) -> str:
    """``1, 5, 9, …, 161`` — what ``4n+1`` means, spelled out."""
    first = [int(rule.lo(ctx)) + i * rule.step(ctx) for i in range(3)]
    return ", ".join(str(v) for v in first) + f", …, {number(rule.hi(ctx))}"


@dataclass(frozen=True)
class Choice:
    """A rule for a COMBO input: the value must be one of ``choices`` (a function of the context:
    some lists depend on the task)."""

    choices: Callable[[Context], tuple[str, ...]]

    def allowed(self, ctx: Context) -> str:
        return ", ".join(self.choices(ctx))

    def problem(self, value: str, ctx: Context) -> str | None:
        return None if value in self.choices(ctx) else "is not one of the allowed values"


class Rule(Protocol):
    """What an option's rule says: what is allowed, and what is wrong with a parsed value (None: fine)."""

    def allowed(self, ctx: Context) -> str: ...

    def problem(self, value: Any, ctx: Context) -> str | None: ...


@dataclass(frozen=True)
class OptionSpec:
    """One option: its canonical name, type, rule, default and aliases."""

    name: str
    parse: Callable[[object], Any]
    rule: Rule
    default: Callable[[Context], Any]
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def multiple_below(limit: int, step: int, offset: int = 0) -> int:
    """The largest ``step*n + offset`` not above ``limit``: the real maximum a limit allows."""
    return (limit - offset) // step * step + offset


def parse_option(spec: OptionSpec, path: str, raw: object, ctx: Context, problems: Problems) -> Any:
    """One value of ``spec``, or None after reporting why it is refused under ``path`` (the name used)."""
    try:
        parsed = spec.parse(raw)
    except Rejected as exc:
        problems.add(path, f"{shown(raw)} {exc}", spec.rule.allowed(ctx))
        return None
    problem = spec.rule.problem(parsed, ctx)
    if problem is not None:
        problems.add(path, f"{shown(raw)} {problem}", spec.rule.allowed(ctx))
        return None
    return parsed
