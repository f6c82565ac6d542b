"""Hypothesis: arbitrary text in group values, column names, check ids, class-free binary
gates and waivers, through each sink function and through every reporter (issue 10).

Deterministic (``derandomize``, no example database) and bounded to a few seconds.
"""

from __future__ import annotations

import dataclasses
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fairgate.comparison import CompareRequest, run_compare
from fairgate.comparison import render_markdown as compare_markdown
from fairgate.comparison import render_terminal as compare_terminal
from fairgate.core.outcome import GateReport
from fairgate.errors import FairgateError, InternalError
from fairgate.integrations.github import (
    build_annotations,
    build_compare_annotations,
    compare_outputs,
    format_outputs,
    outputs,
)
from fairgate.integrations.mlflow import collect, kpi_table, note, valid_key
from fairgate.report import safe
from fairgate.report.compare_html import render_html as compare_html
from fairgate.report.html import render_html
from fairgate.report.junit import render_junit
from fairgate.report.markdown import render_markdown
from fairgate.report.terminal import TerminalReporter
from tests.hostile.test_text_sinks import (
    CANDIDATE_REPORT,
    PAGE_TAGS,
    assert_csv_inert,
    assert_html_inert,
    assert_markdown_inert,
    assert_no_runner_command,
    assert_terminal_safe,
    parse_html,
    render_gfm,
    yaml_str,
)

FRAGMENTS = ["::", "##[", "##vso[", "::set-output name=verdict::pass", "::add-mask::",
             "\n", "\r", "\r\n", "\t", "\x00", "\x1b[2J", "\x7f", "\x85", "\u2028", "\u200d",
             "\ufeff", "<", ">", "&", "&lt;", '"', "'", "|", "*", "_", "`", "[", "]", "(", ")",
             "!", "#", "~", "$", "-", "+", "=", "@", "1.", "\\", "%", "%0A", ",", ":", " ",
             "<img src=x onerror=alert(1)>", "<script>", "]]>", "http://x.example", "www.x.",
             "😀", "𝔘"]
TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), min_size=1,
                max_size=6).map("".join)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- sink functions


@FUZZ
@given(TEXT)
def test_markdown_renders_literally_on_github(text: str) -> None:
    md = f"| a | b |\n|---|---|\n| {safe.markdown(text)} | z |\n"
    page = parse_html(render_gfm(md))
    assert [t for t, _ in page.tags] == ["table", "thead", "tr", "th", "th", "tbody", "tr",
                                         "td", "td"]
    assert page.cells[2].strip() == safe.visible(text).strip() and page.cells[3] == "z"
    para = parse_html(render_gfm(f"x {safe.markdown(text)} y\n"))
    assert [t for t, _ in para.tags] == ["p"]


@FUZZ
@given(TEXT)
def test_html_renders_literally(text: str) -> None:
    page = parse_html(f'<p data-x="{safe.html(text)}">{safe.html(text)}</p>')
    assert page.tags == [("p", [("data-x", safe.visible(text))])]
    assert "".join(page.text) == safe.visible(text)


@FUZZ
@given(TEXT)
def test_xml_round_trips(text: str) -> None:
    el = ET.Element("a", {"b": safe.xml(text)})
    el.text = safe.xml(text)
    back = ET.fromstring(ET.tostring(el, encoding="unicode").encode())
    assert back.get("b") == safe.xml(text) and (back.text or "") == safe.xml(text)


@FUZZ
@given(TEXT)
def test_terminal_has_no_command_and_no_control(text: str) -> None:
    assert_terminal_safe(f"  {safe.terminal(text)}")
    assert_terminal_safe(safe.guard_lines(text))
    assert_no_runner_command(safe.workflow_command("error", text, title=text, file=text))


@FUZZ
@given(TEXT)
def test_csv_cell_is_one_inert_cell(text: str) -> None:
    rows = assert_csv_inert(f"c\n{_csv(safe.csv_cell(text))}\n", ["c"])
    assert len(rows) == 1


def _csv(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


# ----------------------------------------------------------------------------- every reporter

NAME = TEXT.filter(lambda s: s.strip() not in ("", "y", "t"))


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(values=st.lists(TEXT, min_size=1, max_size=3), names=st.lists(NAME, min_size=3,
       max_size=3), check_id=TEXT, owner=NAME, reason=NAME)
def test_every_reporter_with_hostile_text(values: list[str], names: list[str], check_id: str,
                                         owner: str, reason: str) -> None:
    groups = list(dict.fromkeys([*values, "plain"]))
    columns = [f"{name}{'_' * i}" for i, name in enumerate(names[:2])]  # distinct
    score = names[2] + "__s"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        n = 60 * len(groups)
        df = pd.DataFrame({columns[0]: np.repeat(groups, 60), columns[1]: rng.choice(groups, n),
                           "y": rng.integers(0, 2, n)})
        df["t"] = rng.random(n)
        df[score] = np.clip(df["t"] + rng.normal(0, 0.2, n), 0, 1)
        df.to_parquet(folder / "a.parquet")
        a, b = yaml_str(columns[0]), yaml_str(columns[1])
        (folder / "p.yaml").write_text(
            "version: 1\n"
            f"audit: {{label: y, positive_label: 1, sensitive: [{a}, {b}], intersections: true,"
            " min_group_size: 5}\n"
            "checks:\n"
            "  - {id: dp, metric: demographic_parity_difference, max: 0.0}\n"
            "  - {id: ratio, metric: demographic_parity_ratio, min: 1.0, severity: warn}\n"
            "  - {id: acc, metric: accuracy, max_decrease: 0.0}\n"
            f"waivers:\n  - {{check: ratio, owner: {yaml_str(owner)}, reason: "
            f"{yaml_str(reason)}, expires: 2000-01-01}}\n"
            "statistics: {resamples: 0}\n", encoding="utf-8")
        try:
            c = run_compare(CompareRequest(policy=folder / "p.yaml", data=folder / "a.parquet",
                                           teacher_scores="t", candidate_scores=(score, "t"),
                                           out=folder / "out"))
        except FairgateError as e:  # refused with exit 2/3 is fine; a crash is not
            event(f"refused: {type(e).__name__}")
            assert not isinstance(e, InternalError)
            assert_terminal_safe(safe.guard_lines(f"fairgate: error: {e}"))
            return
        event("rendered")
        for text in (compare_terminal(c), TerminalReporter(folder / check_id, False).render(
                _with_check_id(c.candidates[0].report, check_id))):
            assert_terminal_safe(text)
            assert_terminal_safe(safe.guard_lines(text))
        assert_markdown_inert(compare_markdown(c), links=CANDIDATE_REPORT)
        for tag, attrs in parse_html(compare_html(c)).tags:
            assert tag in PAGE_TAGS | {"a"} and not any(k.startswith("on") for k, _ in attrs)
        assert_no_runner_command("\n".join(n.command() for n in build_compare_annotations(c)))
        assert format_outputs(compare_outputs(c, folder))
        report = _with_check_id(c.candidates[0].report, check_id)
        assert_markdown_inert(render_markdown(report))
        assert_html_inert(render_html(report))
        ET.fromstring(render_junit(report).encode())
        assert_no_runner_command("\n".join(n.command() for n in build_annotations(report)))
        assert format_outputs(outputs(report, folder))
        assert_csv_inert(kpi_table(report), ["check", "metric", "grouping", "undefined"])
        record = collect(report, env={})
        assert all(valid_key(k) for k in (*record.metrics, *record.params, *record.tags))
        assert_markdown_inert(note(report))


def _with_check_id(report: GateReport, check_id: str) -> GateReport:
    """The report as if the policy had allowed any check id (a Python API caller could)."""
    results = tuple(dataclasses.replace(r, check=r.check.model_copy(update={"id": check_id}))
                    if r.check.id == "dp" else r for r in report.decision.results)
    return dataclasses.replace(report, decision=dataclasses.replace(report.decision,
                                                                    results=results))
