"""The linear-time config regex matcher gives `re`'s answers and refuses what needs backtracking."""
from __future__ import annotations

import random
import re

import pytest

from marlin_convert.errors import CheckpointError
from marlin_convert.formats.config_regex import ConfigRegex, UnsupportedRegex, config_regex

PATTERNS = [
    r"(a|aa)+$", r".*lm_head", r".*\.mlp\..*", r"model\.layers\.(\d+)\.mlp\.experts\.\d+\.down_proj",
    r".*\.layers\.([0-9]|1[0-5])\..*", r"^a*b?c{2,3}$", r"x{0,2}y", r"[^a-c\d]+\Z", r"\bmlp\b", r"\Bl", r"a|b|",
    r"(?:ab)*?c", r"(a*)*$", r"[a-z_.0-9]+$", r"\w+\s*\S", r"$", r"^", r"a$", r"(ab|a)(bc|c)", r"[.]", r"a{2,}",
    r"q_proj|k_proj", r"(?x) a b # comment", r".*.*.*x$",
]


def _names() -> list[str]:
    rng = random.Random(11)
    fixed = ["", "a", "aa", "lm_head", "model.layers.3.mlp.experts.12.down_proj", "model.layers.12.self_attn.q_proj",
             "ccc", "abcc", "xxy", "zz\n", "a\n", "mlp.x", "x.mlp", "abc", "ac", "d1", "k_proj", "a b"]
    return fixed + ["".join(rng.choice("abcxy._\n1 l") for _ in range(rng.randint(0, 12))) for _ in range(200)]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_same_answers_as_re(pattern):
    rx = ConfigRegex(pattern)
    for name in _names():
        assert rx.match(name) == (re.match(pattern, name) is not None), (pattern, name)
        assert rx.search(name) == (re.search(pattern, name) is not None), (pattern, name)


def test_exponential_pattern_on_41_characters():
    rx = ConfigRegex(r"(a|aa)+$")
    assert not rx.match("a" * 40 + "b") and rx.match("a" * 41)
    assert not ConfigRegex(".*" * 30 + "x$").search("a" * 200)


@pytest.mark.parametrize("pattern, why", [
    (r"(a)\1", "backreference"), (r"(?=a)", "lookahead"), (r"(?<!a)b", "lookbehind"), (r"(?i)a", "inline flags"),
    (r"(?>a)", "atomic"), (r"a++", "possessive"), (r"(a)(?(1)b|c)", "conditional"), (r"(?i:a)b", "inline flags"),
    (r"((a{100}){100}){100}", "too large"),
])
def test_unsupported_features_are_refused(pattern, why):
    with pytest.raises(UnsupportedRegex, match=why):
        ConfigRegex(pattern)


def test_error_names_file_key_and_pattern():
    with pytest.raises(CheckpointError, match=r"^config.json: key x: regex '\(a\)\\\\1' uses a backreference"):
        config_regex(r"(a)\1", "config.json: key x")
    with pytest.raises(CheckpointError, match=r"regex '\(' is not valid"):
        config_regex("(", "config.json: key x")
