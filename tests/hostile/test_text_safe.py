"""fairgate.report.safe, one sink at a time, with exact expected outputs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fairgate.report import safe
from tests.hostile.runner import commands, parse_v2


@pytest.mark.parametrize(("raw", "out"), [
    ("plain ünï 😀", "plain ünï 😀"),
    ("a\tb\nc\rd", "a\\tb\\nc\\rd"),
    ("\x00\x1b[2J\x7f", "\\x00\\x1b[2J\\x7f"),
    ("\x85\x9b", "\\x85\\x9b"),
    ("\u2028\u2029", "\\u2028\\u2029"),
    ("\u202egnp.exe", "\\u202egnp.exe"),  # bidi override: shown, not applied
    ("A\u200bB\ufeff\xad", "A\\u200bB\\ufeff\\xad"),  # invisible: two labels cannot look alike
    ("\ud800", "\\ud800"),  # a lone surrogate cannot be written as UTF-8
    ("a\u200db", "a\u200db"),  # ZWJ stays: emoji sequences and scripts need it
])
def test_visible(raw: str, out: str) -> None:
    assert safe.visible(raw) == out


def test_clip() -> None:
    assert safe.clip("abcdef", 10) == "abcdef"
    assert safe.clip("abcdef", 3) == "abc… (3 more characters)"
    assert safe.clip("x" * 1_000_003, 3) == "xxx… (1,000,000 more characters)"
    assert safe.clip("abcdef", 3, short=True) == "ab…"
    assert safe.clip("abcdef", None) == "abcdef"


@pytest.mark.parametrize(("raw", "out"), [
    ("\n::set-output name=verdict::pass", "\\n::set-output name=verdict::pass"),
    ("::add-mask::x", "\\x3a:add-mask::x"),
    ("  ::stop-commands::tok", "  \\x3a:stop-commands::tok"),
    ("\u3000::warning::x", "\u3000\\x3a:warning::x"),  # .NET TrimStart removes U+3000
    ("\u200b::warning::x", "\\u200b::warning::x"),
    ("\u200d::warning::x", "\u200d\\x3a:warning::x"),  # culture-aware StartsWith skips ZWJ
    ("x ##[error]y", "x #\\x23[error]y"),
    ("###[error]", "##\\x23[error]"),
    ("##vso[task.setvariable variable=v]1", "#\\x23vso[task.setvariable variable=v]1"),
    ("##VSO[task]", "#\\x23VSO[task]"),
    ("#\u200d#[error]", "#\u200d\\x23[error]"),
    ("\r::warning::x", "\\r::warning::x"),
    ("\x1b[2J", "\\x1b[2J"),
    ("a::b ## [x] #[y]", "a::b ## [x] #[y]"),  # not commands: unchanged
])
def test_terminal(raw: str, out: str) -> None:
    assert safe.terminal(raw) == out
    assert not commands(safe.terminal(raw)) and not commands(safe.terminal(raw), lenient=True)


def test_terminal_clips() -> None:
    assert safe.terminal("B" * 1_000_000) == "B" * 200 + "… (999,800 more characters)"
    assert safe.terminal("abc", 2) == "ab… (1 more characters)"


def test_guard_lines() -> None:
    text = ("ok\r::warning::x\n  ::stop-commands::tok\nvalue ##[error]y\n\x1b[31mFAIL\x1b[0m dp"
            "\n\x1b[2J\x00\ttab")
    assert safe.guard_lines(text) == ("ok\\r::warning::x\n  \\x3a:stop-commands::tok\n"
                                      "value #\\x23[error]y\n\\x1b[31mFAIL\\x1b[0m dp\n"
                                      "\\x1b[2J\\x00\ttab")
    assert safe.guard_lines(text, styled=True).split("\n")[3:] == ["\x1b[31mFAIL\x1b[0m dp",
                                                                    "\\x1b[2J\\x00\ttab"]
    assert safe.guard_lines("x" * 20_000) == "x" * 10_000 + "… (10,000 more characters)"


def test_echo_guards_and_the_workflow_path_does_not() -> None:
    @click.command()
    def cmd() -> None:
        safe.echo("a\n::set-output name=verdict::pass")
        safe.emit_workflow_command(safe.workflow_command("error", "m\n##[x]", title="t"))

    out = CliRunner().invoke(cmd).stdout
    assert out == "a\n\\x3a:set-output name=verdict::pass\n::error title=t::m%0A#\\x23[x]\n"
    assert [c.name for c in commands(out)] == ["error"]


@pytest.mark.parametrize(("raw", "out"), [
    ("sex*age_group", "sex\\*age_group"),
    ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
    ("a|b", "a\\|b"),
    ("*bold* _it_ `c` ~s~ #h !x $m$ \\", "\\*bold\\* \\_it\\_ \\`c\\` \\~s\\~ \\#h \\!x \\$m\\$ \\\\"),
    ("[x](javascript:alert(1))", "\\[x\\](javascript:alert(1))"),
    ("http://evil.example www.evil.example", "http\\://evil.example www\\.evil.example"),
    ("a & b &lt;", "a &amp; b &amp;lt;"),
    ("- item", "\\- item"),
    ("1. item", "1\\. item"),
    ("+ item", "\\+ item"),
    ("===", "\\==="),
    ("-0.5 and 0.25", "-0.5 and 0.25"),  # not a list: unchanged
    ("snake_case_name", "snake_case_name"),  # intraword _ cannot emphasise
    ("a\nb\x00\x1b[2J", "a\\\\nb\\\\x00\\\\x1b\\[2J"),  # renders as a\nb\x00\x1b[2J
])
def test_markdown(raw: str, out: str) -> None:
    assert safe.markdown(raw) == out


def test_markdown_clips() -> None:
    assert safe.markdown("*" * 10, 4) == "\\*\\*\\*\\*… (6 more characters)"


@pytest.mark.parametrize(("raw", "out"), [
    ("report.md", "`report.md`"),
    ("dir/<b>x.yaml", "`dir/<b>x.yaml`"),  # literal inside code
    ("a`b", "a\\`b"),
    ("a|b", "a\\|b"),
    ("a\nb", "`a\\nb`"),
    ("", ""),
])
def test_markdown_code(raw: str, out: str) -> None:
    assert safe.markdown_code(raw) == out


@pytest.mark.parametrize(("raw", "out"), [
    ('<img src="x" onerror=\'alert(1)\'>', "&lt;img src=&quot;x&quot; onerror=&#x27;alert(1)&#x27;&gt;"),
    ("a & b", "a &amp; b"),
    ("\x00\x1b\n", "\\x00\\x1b\\n"),
])
def test_html(raw: str, out: str) -> None:
    assert safe.html(raw) == out


def test_html_clips() -> None:
    assert safe.html("<" * 2000) == "&lt;" * 1000 + "… (1,000 more characters)"
    assert safe.html("abcdef", 4, short=True) == "abc…"


def test_xml() -> None:
    assert safe.xml("a\x00b\x1b\x7f\x85\ufffe\ud800<&\"\t\n\r") == (
        "a\\x00b\\x1b\\x7f\\x85\\ufffe\\ud800<&\"\t\n\\r")
    assert safe.xml("x" * 5000) == "x" * 4000 + "… (1,000 more characters)"


@pytest.mark.parametrize(("raw", "out"), [
    ("=1+1", "'=1+1"),
    ("+1", "'+1"),
    ("-1", "'-1"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("  =cmd|' /C calc'!A0", "'  =cmd|' /C calc'!A0"),
    ("\u3000=1", "'\u3000=1"),
    ("\t=1+1", "\\t=1+1"),  # the TAB is shown, so the cell starts with a backslash
    ("\r=1", "\\r=1"),
    ("a\r\nb", "a\\r\\nb"),  # one cell, one row
    ("sex", "sex"),
    ("", ""),
])
def test_csv_cell(raw: str, out: str) -> None:
    assert safe.csv_cell(raw) == out


@pytest.mark.parametrize(("raw", "out"), [
    (">50K", "gt_50K"),
    ("<=50K", "le_50K"),
    ("age = 40+", "age_eq_40_plus"),
    ("::set-output\n##[x]", "set-output_x"),
    ("..", "__"),
    ("", "_"),
    ("ﬁ", "fi"),  # NFKC
])
def test_mlflow_key_part(raw: str, out: str) -> None:
    assert safe.mlflow_key_part(raw) == out


def test_mlflow_value() -> None:
    assert safe.mlflow_value("a\nb\x1b", 100) == "a\\nb\\x1b"
    assert safe.mlflow_value("abcdef", 4) == "abc…"


def test_workflow_fields() -> None:
    assert safe.workflow_data("100%\r\n:, ##[x] \x1b") == "100%25%0D%0A:, #\\x23[x] \\x1b"
    assert safe.workflow_property("100%\r\n:,") == "100%25%0D%0A%3A%2C"
    line = safe.workflow_command("warning", "a\n::set-output name=x::y", file="p:1.yaml", line=3,
                                 title="t,u")
    assert line == "::warning file=p%3A1.yaml,line=3,title=t%2Cu::a%0A::set-output name=x::y"
    cmd = parse_v2(line)
    assert cmd is not None and cmd.data == "a\n::set-output name=x::y"
    assert cmd.properties == {"file": "p:1.yaml", "line": "3", "title": "t,u"}
    assert len(commands(line)) == 1
    assert safe.workflow_command("endgroup", "") == "::endgroup::"


def test_nothing_writes_around_the_guard() -> None:
    """Only safe.py writes to stdout/stderr; everything else calls safe.echo (or emits a
    workflow command built by safe.workflow_command)."""
    package = Path(__file__).resolve().parents[2] / "fairgate"
    writes = re.compile(r"\bclick\.(echo|secho)\(|\bprint\(|sys\.(stdout|stderr)\.write")
    offenders = [p.name for p in package.rglob("*.py")
                 if p.name != "safe.py" and writes.search(p.read_text(encoding="utf-8"))]
    assert not offenders
