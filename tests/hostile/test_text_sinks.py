"""Hostile text for the tests/hostile/test_text_* modules: payloads, an audit set and a policy
that carry them, and checks of each sink (GFM Markdown as GitHub renders it, HTML, XML, CSV),
themselves tested at the bottom against output that is not safe.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cmarkgfm.cmark import Options

from tests.hostile.runner import foreign_commands

PAYLOADS = [
    "\n::set-output name=verdict::pass",
    "::add-mask::x",
    "::stop-commands::tok",
    "##[error]x",
    "\r::warning::x",
    "\x1b[2J",
    "\x00",
    "<img src=x onerror=alert(1)>",
    "a|b",
    "*bold*",
    "=cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1",
    "##vso[task.setvariable variable=verdict]pass",
    "\u2028::set-env name=x::y",
    "#\u200d#[error]zwj",
    "[click](https://evil.example)",
    "😀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]
BIG = "\n::error::big ##[error]big " + "B" * 1_000_000  # a 1 MB group value
COLUMN_A = "g\n::set-output name=verdict::pass ##[error]c <img src=x onerror=alert(1)>|*b*"
COLUMN_B = "  =cmd|' /C calc'!A0 \r::warning::col \x1b[2J"
TEACHER = "t ##[error]t\r::add-mask::t"
STUDENT = "s"
OWNER = "=cmd|' /C calc'!A0 \x1b[2J <b>owner</b>"
REASON = "\n::set-output name=verdict::pass ##[error]r <img src=x onerror=alert(1)> *b* a|b \x00"

# What each value must look like once rendered (Markdown, HTML): shown literally, with
# control characters as escapes.
def shown(value: str) -> str:
    return (value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\x1b", "\\x1b").replace("\x00", "\\x00").replace("\u2028", "\\u2028"))


def yaml_str(text: str) -> str:
    """A YAML double-quoted scalar holding any text (control characters as escapes)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() and c not in "\x85\u2028\u2029":
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def hostile_audit(folder: Path, big: bool = True) -> Path:
    """Group values and column names that are payloads; a score column per model."""
    rng = np.random.default_rng(7)
    values = [*PAYLOADS, "plain"] + ([BIG] if big else [])
    per = 40
    n = per * len(values)
    idx = np.repeat(np.arange(len(values)), per)
    y = rng.integers(0, 2, n)
    t = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    s = np.clip(t + (idx % 3) * 0.15 - 0.1 + rng.normal(0, 0.05, n), 0, 1)
    table = pa.table({
        COLUMN_A: pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)),
                                                 pa.array(values, pa.large_string())),
        COLUMN_B: rng.choice(["x", "y"], n),
        "sex": rng.choice(["F", "M"], n),
        "age_group": rng.choice(["young", "old"], n),
        "y": y, TEACHER: t, STUDENT: s,
    })
    path = folder / "audit.parquet"
    pq.write_table(table, path)
    return path


def hostile_policy(folder: Path) -> Path:
    """A failing, a warning, a waived and an expired-waiver check, hostile waivers."""
    a, b = yaml_str(COLUMN_A), yaml_str(COLUMN_B)
    text = f"""\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [{a}, {b}, sex, age_group]
checks:
  - {{id: dp-fail, metric: demographic_parity_difference, max: 0.0}}
  - {{id: dp-warn, metric: demographic_parity_ratio, min: 1.0, severity: warn}}
  - {{id: dp-waived, metric: equalized_odds_difference, on: [{a}], max: 0.0}}
  - {{id: acc, metric: accuracy, max_decrease: 1.0}}
  - {{id: sex-age, metric: demographic_parity_difference, on: [[sex, age_group]], max: 1.0}}
waivers:
  - {{check: dp-waived, owner: {yaml_str(OWNER)}, reason: {yaml_str(REASON)}, expires: 2099-01-01}}
  - {{check: acc, owner: {yaml_str(OWNER)}, reason: {yaml_str(REASON)}, expires: 2000-01-01}}
statistics: {{resamples: 0}}
"""
    path = folder / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- CI logs


def assert_no_runner_command(*texts: str) -> None:
    """No line the Actions runner (or Azure) would execute, but fairgate's own annotations."""
    for text in texts:
        found = foreign_commands(text)
        assert not found, found[:3]


def assert_terminal_safe(text: str, styled: bool = False) -> None:
    """No raw control character but LF, TAB and (when styled) fairgate's own colours."""
    rest = re.sub(r"\x1b\[[0-9;]*m", "", text) if styled else text
    bad = sorted({c for c in rest if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0
                  or c in "\u2028\u2029"})
    assert not bad, bad
    assert_no_runner_command(text)


# ----------------------------------------------------------------------------- Markdown


class _Page(HTMLParser):
    """Tags, attributes, table cells and text of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse_html(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


MD_TAGS = {"h1", "h2", "h3", "p", "strong", "em", "br", "b", "sub", "details", "summary",
           "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "blockquote", "code"}


def render_gfm(md: str) -> str:
    """GitHub's own renderer (cmark-gfm), with raw HTML kept, so an injection would show."""
    return cmarkgfm.github_flavored_markdown_to_html(md, options=Options.CMARK_OPT_UNSAFE)


#: The links compare.md writes: to each candidate's own reports, in folder-safe names.
CANDIDATE_REPORT = re.compile(r"[A-Za-z0-9._-]+/report\.(?:md|html)")


def assert_markdown_inert(md: str, literal: Iterable[str] = (),
                          links: re.Pattern[str] | None = None) -> _Page:
    """No raw control character in the file; rendered, only the elements fairgate writes
    (links only to mailto:, or to what ``links`` matches whole), every table row as wide as
    its header, ``literal`` shown as is."""
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", md)
    rows = [line for line in md.splitlines() if line.startswith("|")]
    for line in rows:  # a data pipe is escaped: the cell count is the header's
        assert len(re.findall(r"(?<!\\)\|", line)) in _widths(md), line
    page = parse_html(render_gfm(md))
    for tag, attrs in page.tags:
        href = dict(attrs).get("href") or ""
        assert tag in MD_TAGS or (tag == "a" and (href.startswith("mailto:") or (
            links is not None and links.fullmatch(href) is not None))), (tag, attrs)
    text = "".join(page.text)
    for value in literal:
        assert value in text, value
    return page


def _widths(md: str) -> set[int]:
    """Pipes per row of each table: taken from the header rows (``|---|`` lines follow them)."""
    lines = md.splitlines()
    return {lines[i - 1].count("|") for i, line in enumerate(lines)
            if re.fullmatch(r"\|(---:?\|)+", line)}


# ----------------------------------------------------------------------------- HTML, XML, CSV

PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p",
             "b", "br", "span", "section", "table", "thead", "tbody", "tr", "th", "td", "div",
             "ul", "li", "details", "summary", "svg", "g", "rect", "line", "text", "circle", "i",
             "code"}


def assert_html_inert(page: str, literal: Iterable[str] = (), max_bytes: int = 2_000_000) -> None:
    """Parses; only the elements report.html uses; no event handler; bounded; values shown."""
    assert len(page.encode()) < max_bytes, len(page.encode())
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", page)
    parsed = parse_html(page)
    for tag, attrs in parsed.tags:
        assert tag in PAGE_TAGS, tag
        assert not any(k.lower().startswith("on") for k, _ in attrs), attrs
    text = "".join(parsed.text)
    for value in literal:
        assert value in text, value


def assert_xml_parses(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode())


def assert_csv_inert(text: str, text_columns: Iterable[str]) -> list[dict[str, str]]:
    """No text cell a spreadsheet would run as a formula."""
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        for col in text_columns:
            cell = row[col]
            first = next((c for c in cell if not (c.isspace() or ord(c) < 0x20)), "")
            if first in ("=", "+", "-", "@") or cell[:1] in ("\t", "\r"):
                assert cell.startswith("'"), (col, cell)
    return rows


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


# ----------------------------------------------------------------------------- the checks catch


@pytest.mark.parametrize("log", [
    "ok\n::set-output name=verdict::pass", "ok\r::add-mask::x", "  ::stop-commands::tok",
    "\u3000::warning::x", "x ##[error]y", "x ##vso[task.setvariable variable=v]1",
    "::error title=t::m ##[group]x", "#\u200d#[error]zwj", "\u200b::set-env name=a::b",
])
def test_runner_reading_finds_what_the_runner_would_run(log: str) -> None:
    with pytest.raises(AssertionError):
        assert_no_runner_command(log)


def test_runner_reading_keeps_our_annotations() -> None:
    assert_no_runner_command("::error file=p.yaml,line=3,title=a%3Ab::m%0A::set-output x::y\n"
                             "plain line :: with colons\n##  [not a command")


@pytest.mark.parametrize("md", [
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |\n",
    "| a |\n|---|\n| x | y |\n",
    "| a |\n|---|\n| [x](https://evil.example) |\n",
    "| a |\n|---|\n| www.evil.example |\n",
    "x \x1b[2J\n",
])
def test_markdown_check_catches_injections(md: str) -> None:
    with pytest.raises(AssertionError):
        assert_markdown_inert(md)


def test_markdown_check_wants_literal_text() -> None:
    with pytest.raises(AssertionError):
        assert_markdown_inert("| a |\n|---|\n| *bold* |\n", literal=["*bold*"])
    assert_markdown_inert("| a |\n|---|\n| \\*bold\\* |\n", literal=["*bold*"])


@pytest.mark.parametrize("page", ["<p><img src=x></p>", "<p onclick=x>a</p>", "<p>\x00</p>",
                                  "<script>x</script>"])
def test_html_check_catches_injections(page: str) -> None:
    with pytest.raises(AssertionError):
        assert_html_inert(page)


@pytest.mark.parametrize("cell", ["=1+1", "\t=1", "\r=1", " @x", "\t", "-2"])
def test_csv_check_catches_formulas(cell: str) -> None:
    text = io.StringIO()
    csv.writer(text).writerows([["c"], [cell]])
    with pytest.raises(AssertionError):
        assert_csv_inert(text.getvalue(), ["c"])
