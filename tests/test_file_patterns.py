"""Tests for fleet.file_patterns: output file globs and safe relative paths."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import BadInput
from fleet.file_patterns import compile_pattern, match, safe_relpath, select

TREE = [
    "a.txt",
    "b.log",
    "abc",
    "adc",
    "a/c",
    ".hidden",
    "x/y/a.txt",
    "x/b.txt",
    "output/r.bin",
    "output/deep/s.bin",
    "outputs/t.bin",
    "output",
    "logs/2024/app.log",
    "wd/stdout.txt",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("**/*.txt", ["a.txt", "wd/stdout.txt", "x/b.txt", "x/y/a.txt"]),
        ("*.txt", ["a.txt"]),
        ("*.log", ["b.log"]),
        ("**/*.log", ["b.log", "logs/2024/app.log"]),
        ("output/**", ["output/deep/s.bin", "output/r.bin"]),
        ("output/*", ["output/r.bin"]),
        ("output*", ["output"]),
        ("output*/*", ["output/r.bin", "outputs/t.bin"]),
        ("a?c", ["abc", "adc"]),
        ("a[bd]c", ["abc", "adc"]),
        ("a[a-c]c", ["abc"]),
        ("a[!b]c", ["adc"]),
        ("a[/]c", None),
        ("*", [".hidden", "a.txt", "abc", "adc", "b.log", "output"]),
        ("**", sorted(TREE)),
        ("x/**/a.txt", ["x/y/a.txt"]),
        ("**/y/**", ["x/y/a.txt"]),
        ("logs/**/*.log", ["logs/2024/app.log"]),
        ("./wd/stdout.txt", ["wd/stdout.txt"]),
        ("wd/**/**/stdout.txt", ["wd/stdout.txt"]),
        ("a**t", ["a.txt"]),
        ("nothing", []),
    ],
)
def test_select_returns_the_sorted_matches(pattern: str, expected: list[str] | None):
    if expected is None:
        with pytest.raises(BadInput):
            select(pattern, TREE)
    else:
        assert select(pattern, TREE) == expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.txt", "a.txt", True),
        ("**/*.txt", "x/y/a.txt", True),
        ("*.txt", "x/a.txt", False),
        ("?", "/", False),
        ("a?b", "a/b", False),
        ("a[+-0]b", "a/b", False),
        ("a[+-0]b", "a.b", True),
        ("[]]", "]", True),
        ("[!]]", "a", True),
        ("[!]]", "]", False),
        ("[^a]", "^", True),
        ("[^a]", "b", False),
        ("a\\b", "a\\b", True),
        ("(a|b).+", "(a|b).+", True),
        ("(a|b).+", "a.+", False),
        ("[a&&b]", "&", True),
        ("[a~~b]", "~", True),
        ("[a||b]", "|", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXbYd", False),
        ("*a*", "bab", True),
        ("x/**", "x", False),
    ],
)
def test_match_follows_glob_rules(pattern: str, path: str, expected: bool):
    assert match(pattern, path) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/etc/*", "absolute"),
        ("../*.txt", "'..'"),
        ("a/../../b", "'..'"),
        ("a//b", "empty segment"),
        ("out/", "ends with '/'"),
        ("", "non-empty"),
        (".", "matches no file"),
        ("a[bc", "without its ']'"),
        ("[z-a]", "malformed"),
        ("a\0b", "NUL"),
        ("x" * 5000, "longer than"),
    ],
)
def test_bad_patterns_are_rejected(pattern: str, reason: str):
    with pytest.raises(BadInput) as err:
        compile_pattern(pattern, target="task j/t", field="outputFiles[0].filePattern")
    assert err.value.code == "InvalidFilePattern"
    assert err.value.target == "task j/t"
    assert err.value.field == "outputFiles[0].filePattern"
    assert reason in err.value.message


def test_a_non_string_pattern_is_rejected() -> None:
    with pytest.raises(BadInput) as err:
        compile_pattern(["*.txt"])  # type: ignore[arg-type]
    assert err.value.code == "InvalidFilePattern"


def test_patterns_that_backtrack_badly_in_naive_globs_still_finish():
    assert not match("*a*a*a*a*a*a*a*a*a*a*b", "a" * 300)
    assert not match("**/a/**/a/**/a/**/a/**/b", "/".join(["a"] * 200))
    assert match("**/a/**/a/**/b", "/".join(["a"] * 200) + "/b")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a", "a"),
        ("a/b/c", "a/b/c"),
        ("./a//b/", "a/b"),
        ("a/../b", "b"),
        ("a/b/../../c", "c"),
        ("a\\b", "a\\b"),
        ("..a/b..", "..a/b.."),
    ],
)
def test_safe_relpath_normalizes(path: str, expected: str):
    assert safe_relpath(path) == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "non-empty"),
        ("/etc/passwd", "absolute"),
        ("..", "climbs out"),
        ("../a", "climbs out"),
        ("a/../../b", "climbs out"),
        ("a/..", "base directory itself"),
        (".", "base directory itself"),
        ("a\0b", "NUL"),
        ("a/" * 3000, "longer than"),
    ],
)
def test_safe_relpath_rejects_escaping_or_empty_paths(path: str, reason: str):
    with pytest.raises(BadInput) as err:
        safe_relpath(path, target="task j/t", field="outputFiles[0].destination")
    assert err.value.code == "InvalidFilePath"
    assert err.value.field == "outputFiles[0].destination"
    assert reason in err.value.message


def test_safe_relpath_rejects_non_strings() -> None:
    with pytest.raises(BadInput):
        safe_relpath(None)  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------

segment_st = st.text(alphabet="ab.-_xyz*?[]!", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)
name_st = st.text(alphabet="ab.-_xyz", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)
relpath_st = st.lists(name_st, min_size=1, max_size=5).map("/".join)


@settings(max_examples=150)
@given(relpath_st)
def test_double_star_matches_every_path(path: str):
    assert match("**", path)
    assert match("**/*", path)


@settings(max_examples=150)
@given(relpath_st)
def test_single_star_never_crosses_a_slash(path: str):
    assert match("*", path) is ("/" not in path)
    assert match("*/*", path) is (path.count("/") == 1)


def _reference(pats: list[str], parts: list[str]) -> bool:
    if not pats:
        return not parts
    if pats[0] == "**":
        if len(pats) == 1:
            return bool(parts)
        return any(_reference(pats[1:], parts[i:]) for i in range(len(parts) + 1))
    return (
        bool(parts) and fnmatch.fnmatchcase(parts[0], pats[0]) and _reference(pats[1:], parts[1:])
    )


glob_segment_st = st.one_of(
    st.just("**"),
    st.lists(
        st.sampled_from(["a", "b", "ab", "*", "?", "[ab]", "[!a]", "[a-b]", "."]),
        min_size=1,
        max_size=4,
    )
    .map("".join)
    .filter(lambda s: s not in (".", "..")),
)
simple_path_st = st.lists(
    st.text(alphabet="ab.", min_size=1, max_size=4).filter(lambda s: s not in (".", "..")),
    min_size=1,
    max_size=5,
)


@settings(max_examples=300)
@given(st.lists(glob_segment_st, min_size=1, max_size=5), simple_path_st)
def test_match_agrees_with_a_segment_by_segment_reference(pats: list[str], parts: list[str]):
    collapsed: list[str] = []
    for p in pats:
        if not (p == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(p)
    assert match("/".join(pats), "/".join(parts)) is _reference(collapsed, parts)


@settings(max_examples=200)
@given(st.lists(st.one_of(segment_st, st.sampled_from(["..", ".", ""])), min_size=1, max_size=6))
def test_safe_relpath_never_returns_a_path_that_escapes(segs: list[str]):
    path = "/".join(segs)
    try:
        out = safe_relpath(path)
    except BadInput as exc:
        assert exc.code == "InvalidFilePath"
        return
    assert out and not out.startswith("/")
    assert all(s not in ("", ".", "..") for s in out.split("/"))
    assert safe_relpath(out) == out
