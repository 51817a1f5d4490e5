"""Regular expressions from a checkpoint's config, matched in linear time.

Module-name regexes come from config.json (compressed-tensors `re:` targets, GPTQ `dynamic` rules,
auto-round `extra_config` keys): untrusted input. Python's backtracking `re` takes exponential time on
patterns such as `(a|aa)+$`, so a pattern is parsed with Python's own parser (same syntax and meaning)
and run as a Thompson NFA: time proportional to name length times pattern size, never more.
Features that need backtracking (backreferences, lookaround, conditionals, atomic groups, possessive
repeats) and inline flags are refused with `UnsupportedRegex`.
"""
from __future__ import annotations

import re
from typing import Callable

try:  # Python >= 3.11
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse as P  # type: ignore[no-redef]

from ..errors import CheckpointError

__all__ = ["ConfigRegex", "UnsupportedRegex", "config_regex", "MAX_STATES"]

MAX_STATES = 20_000
"""Largest automaton built (counted repeats such as `x{1000}` expand into copies)."""
_ALLOWED_FLAGS = C.SRE_FLAG_UNICODE | C.SRE_FLAG_VERBOSE
_UNSUPPORTED = {
    C.GROUPREF: "a backreference",
    C.ASSERT: "a lookahead or lookbehind",
    C.ASSERT_NOT: "a lookahead or lookbehind",
    C.GROUPREF_EXISTS: "a conditional group",
}


class UnsupportedRegex(ValueError):
    """A valid Python regex that uses a feature this linear-time matcher does not evaluate."""


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


_CATEGORIES: dict[object, Callable[[str], bool]] = {
    C.CATEGORY_DIGIT: str.isdecimal,
    C.CATEGORY_NOT_DIGIT: lambda ch: not ch.isdecimal(),
    C.CATEGORY_SPACE: str.isspace,
    C.CATEGORY_NOT_SPACE: lambda ch: not ch.isspace(),
    C.CATEGORY_WORD: _is_word,
    C.CATEGORY_NOT_WORD: lambda ch: not _is_word(ch),
}


def _char_set(items: list) -> Callable[[str], bool]:
    negate = False
    tests: list[Callable[[str], bool]] = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            tests.append(lambda ch, c=chr(av): ch == c)
        elif op is C.RANGE:
            tests.append(lambda ch, lo=av[0], hi=av[1]: lo <= ord(ch) <= hi)
        elif op is C.CATEGORY and av in _CATEGORIES:
            tests.append(_CATEGORIES[av])
        else:
            raise UnsupportedRegex(f"uses the character class item {op}")
    return lambda ch: any(t(ch) for t in tests) != negate


def _at(kind: object) -> Callable[[str, int], bool]:
    if kind in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):
        return lambda s, i: i == 0
    if kind is C.AT_END:
        return lambda s, i: i == len(s) or (i == len(s) - 1 and s[i] == "\n")
    if kind is C.AT_END_STRING:
        return lambda s, i: i == len(s)
    if kind in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY):
        def boundary(s: str, i: int) -> bool:
            return (i > 0 and _is_word(s[i - 1])) != (i < len(s) and _is_word(s[i]))
        return boundary if kind is C.AT_BOUNDARY else (lambda s, i: not boundary(s, i))
    raise UnsupportedRegex(f"uses the anchor {kind}")


class ConfigRegex:
    """A compiled pattern; `match` and `search` give the same answers as `re.match` / `re.search`."""

    def __init__(self, pattern: str):
        re.compile(pattern)  # raises re.error for an invalid pattern, as `re` would
        parsed = P.parse(pattern)
        if parsed.state.flags & ~_ALLOWED_FLAGS:
            raise UnsupportedRegex("uses inline flags such as (?i)")
        self.pattern = pattern
        # a state is ("char", test, next), ("split", a, b), ("at", test, next) or ("match",)
        self._states: list[tuple] = [("match",)]
        self._start = self._seq(list(parsed), 0)

    def _new(self, state: tuple) -> int:
        if len(self._states) >= MAX_STATES:
            raise UnsupportedRegex(f"is too large (more than {MAX_STATES} automaton states)")
        self._states.append(state)
        return len(self._states) - 1

    def _seq(self, items: list, nxt: int) -> int:
        for item in reversed(items):
            nxt = self._item(item, nxt)
        return nxt

    def _item(self, item: tuple, nxt: int) -> int:
        op, av = item
        if op is C.LITERAL:
            return self._new(("char", lambda ch, c=chr(av): ch == c, nxt))
        if op is C.NOT_LITERAL:
            return self._new(("char", lambda ch, c=chr(av): ch != c, nxt))
        if op is C.ANY:
            return self._new(("char", lambda ch: ch != "\n", nxt))
        if op is C.IN:
            return self._new(("char", _char_set(av), nxt))
        if op is C.AT:
            return self._new(("at", _at(av), nxt))
        if op is C.BRANCH:
            starts = [self._seq(list(alt), nxt) for alt in av[1]]
            state = starts[-1]
            for alt in reversed(starts[:-1]):
                state = self._new(("split", alt, state))
            return state
        if op is C.SUBPATTERN:
            _group, add_flags, del_flags, body = av
            if add_flags or del_flags:
                raise UnsupportedRegex("uses inline flags such as (?i:...)")
            return self._seq(list(body), nxt)
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):  # greedy or lazy: the same set of matches
            low, high, body = av
            state = nxt
            if high is C.MAXREPEAT:
                loop = self._new(("split", -1, nxt))
                self._states[loop] = ("split", self._seq(list(body), loop), nxt)
                state = loop
            else:
                for _ in range(high - low):
                    state = self._new(("split", self._seq(list(body), state), nxt))
            for _ in range(low):
                state = self._seq(list(body), state)
            return state
        raise UnsupportedRegex(f"uses {_UNSUPPORTED.get(op, str(op).lower())}")

    def _closure(self, states: set[int], state: int, text: str, pos: int) -> None:
        stack = [state]
        while stack:
            s = stack.pop()
            if s in states:
                continue
            states.add(s)
            kind = self._states[s]
            if kind[0] == "split":
                stack.extend((kind[2], kind[1]))
            elif kind[0] == "at" and kind[1](text, pos):
                stack.append(kind[2])

    def _run(self, text: str, anchored: bool) -> bool:
        current: set[int] = set()
        for pos in range(len(text) + 1):
            if pos == 0 or not anchored:
                self._closure(current, self._start, text, pos)
            if 0 in current:
                return True
            if pos == len(text) or (anchored and not current):
                return False
            following: set[int] = set()
            for s in current:
                kind = self._states[s]
                if kind[0] == "char" and kind[1](text[pos]):
                    self._closure(following, kind[2], text, pos + 1)
            current = following
        return False

    def match(self, text: str) -> bool:
        """Whether the pattern matches at the start of `text` (`re.match`)."""
        return self._run(text, anchored=True)

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text` (`re.search`)."""
        return self._run(text, anchored=False)


def config_regex(pattern: str, where: str) -> ConfigRegex:
    """`ConfigRegex(pattern)`, or CheckpointError on one line naming `where` (file and key) and the pattern."""
    try:
        return ConfigRegex(pattern)
    except re.error as e:
        raise CheckpointError(f"{where}: regex {pattern!r} is not valid ({e})") from None
    except UnsupportedRegex as e:
        raise CheckpointError(f"{where}: regex {pattern!r} {e}, which marlin-convert does not evaluate "
                              "(it could take exponential time); use plain alternatives and repeats") from None
    except RecursionError:
        raise CheckpointError(f"{where}: regex {pattern!r} is nested too deeply") from None
