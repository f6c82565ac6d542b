"""report.md, junit.xml and report.html: goldens, the JUnit XSD, numbers, size cap, escaping.

Golden files live in tests/golden/; regenerate them after an intended change with
``FAIRGATE_REGOLD=1 pytest tests/test_reports.py`` and review the diff.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import xmlschema

from fairgate.core.outcome import GateReport
from fairgate.report import reporters, write_reports
from fairgate.report.html import nice_ticks, render_html
from fairgate.report.json import to_dict
from fairgate.report.junit import render_junit
from fairgate.report.markdown import GITHUB_SUMMARY_LIMIT, MAX_BYTES, render_markdown
from fairgate.report.terminal import fmt
from fairgate.run import GateRequest, run_gate
from tests.conftest import SYNTHETIC_POLICY

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
XSD = HERE / "schemas" / "junit.xsd"
REGOLD = os.environ.get("FAIRGATE_REGOLD") == "1"
TODAY = dt.date(2025, 6, 1)

# Every status once: fail, blocking undefined (race C has no positive label), warn,
# waived, pass, inconclusive (a warning, and blocking under on_inconclusive: fail), and an
# expired waiver.
SCENARIO_POLICY = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
  intersections: true
  min_group_size: 100
checks:
  - id: dp-sex
    metric: demographic_parity_difference
    on: [sex]
    max_increase: 0.02
  - id: dp-race
    metric: demographic_parity_difference
    on: [race]
    max: 0.2
  - id: eo-race
    metric: equal_opportunity_difference
    on: [race]
    max_increase: 0.05
  - id: four-fifths
    metric: demographic_parity_ratio
    on: [sex]
    min: 0.99
    severity: warn
  - id: accuracy-kept
    metric: accuracy
    max_decrease: 0.05
  - id: accuracy-strict
    metric: accuracy
    max_decrease: 0.05
    on_inconclusive: fail
  - id: accuracy-loose
    metric: accuracy
    max_decrease: 0.5
waivers:
  - check: dp-race
    grouping: race
    reason: "known gap for group B | <b>retrain</b> planned, see ML-123"
    owner: alice@example.com
    expires: 2030-01-31
  - check: accuracy-kept
    reason: old exception
    owner: bob
    expires: 2020-01-01
statistics:
  resamples: 200
  seed: 0
"""


def scenario_data(path: Path) -> Path:
    rng = np.random.default_rng(7)
    n = 3000
    df = pd.DataFrame({"sex": rng.choice(["F", "M"], n),
                       "race": rng.choice(["A", "B", "C", "D"], n, p=[0.5, 0.3, 0.15, 0.05])})
    df["y"] = rng.integers(0, 2, n)
    df.loc[df.race == "C", "y"] = 0
    df["t"] = np.clip(df.y * 0.35 + rng.random(n) * 0.65, 0, 1).round(4)
    df["s"] = np.clip(df.y * 0.3 + rng.random(n) * 0.65 + (df.sex == "F") * 0.1, 0, 1).round(4)
    df.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> GateReport:
    d = tmp_path_factory.mktemp("scenario")
    (d / "policy.yaml").write_text(SCENARIO_POLICY)
    data = scenario_data(d / "audit.parquet")
    return run_gate(GateRequest(policy=d / "policy.yaml", data=data, teacher_scores="t",
                                student_scores="s", today=TODAY))


def scrub(text: str, report: GateReport) -> str:
    """Volatile fields out: temp paths, version, times."""
    text = text.replace(str(report.policy.path.parent), "<tmp>")
    text = text.replace(f"fairgate {report.version}", "fairgate <version>")
    text = text.replace(f'value="{report.version}"', 'value="<version>"')
    text = re.sub(r"fingerprint [0-9a-f]{64}", "fingerprint <fp>", text)  # has mtimes
    text = re.sub(r'time="[0-9.]+"', 'time="<t>"', text)
    return re.sub(r'timestamp="[^"]*"', 'timestamp="<ts>"', text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGOLD:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden {path}; run FAIRGATE_REGOLD=1 pytest tests/test_reports.py"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from its golden; if intended, regenerate (see top)"


# ----------------------------------------------------------------------------- goldens


def test_scenario_covers_every_status(scenario: GateReport) -> None:
    statuses = {(r.check.id, r.status.value, r.blocking) for r in scenario.decision.results}
    assert statuses == {("dp-sex", "fail", True), ("eo-race", "undefined", True),
                        ("four-fifths", "warn", False), ("dp-race", "waived", False),
                        ("accuracy-kept", "inconclusive", False),
                        ("accuracy-strict", "inconclusive", True),
                        ("accuracy-loose", "pass", False)}
    assert [w.check for w in scenario.decision.expired_waivers] == ["accuracy-kept"]


def test_markdown_golden(scenario: GateReport) -> None:
    check_golden("report.md", scrub(render_markdown(scenario), scenario))


def test_junit_golden(scenario: GateReport) -> None:
    check_golden("junit.xml", scrub(render_junit(scenario), scenario))


def test_markdown_says_failures_first_and_waivers_loudly(scenario: GateReport) -> None:
    md = render_markdown(scenario)
    assert md.startswith("## ❌ FAIL")
    ids = re.findall(r"^\| .*? \| \*\*([\w.-]+)\*\*<br>", md, re.M)
    # blocking first (fail, undefined, inconclusive), then warn, inconclusive, waived, pass
    assert ids == ["dp-sex", "eo-race", "accuracy-strict", "accuracy-kept", "four-fifths",
                   "dp-race", "accuracy-loose"]
    assert "🔷 **inconclusive (blocks)**" in md and "🔷 inconclusive (warn only)" in md
    assert "1 check WAIVED" in md and "waived until **2030-01-31** by alice@&#8203;example.com" in md
    assert "**Expired waiver** for **accuracy-kept**" in md and "**2020-01-01**" in md
    # the waiver reason came from the policy: its HTML and pipe are inert
    assert "<b>retrain" not in md and "&lt;b&gt;retrain&lt;/b&gt;" in md and "B \\| " in md


# ----------------------------------------------------------------------------- JUnit


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def test_junit_is_valid_and_maps_statuses(scenario: GateReport,
                                          schema: xmlschema.XMLSchema) -> None:
    xml = render_junit(scenario)
    schema.validate(xml)
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    outcome = {}
    for case in suite.iter("testcase"):
        kids = [k for k in case if k.tag in ("failure", "error", "skipped")]
        outcome[(case.get("classname"), case.get("name"))] = (
            (kids[0].tag, kids[0].get("type"), kids[0].get("message")) if kids else None)
    assert outcome[("fairgate.dp-sex", "demographic_parity_difference [sex]")][:2] == (
        "failure", "fail")
    assert outcome[("fairgate.eo-race", "equal_opportunity_difference [race]")][:2] == (
        "error", "undefined")
    assert outcome[("fairgate.four-fifths", "demographic_parity_ratio [sex]")][:2] == (
        "skipped", "warn")
    waived = outcome[("fairgate.dp-race", "demographic_parity_difference [race]")]
    assert waived[:2] == ("skipped", "waived")
    assert waived[2].startswith("WAIVED: waived until 2030-01-31 by alice@example.com")
    assert outcome[("fairgate.accuracy-kept", "accuracy [overall]")][:2] == (
        "skipped", "inconclusive-warn")
    assert outcome[("fairgate.accuracy-strict", "accuracy [overall]")][:2] == (
        "failure", "inconclusive")
    assert outcome[("fairgate.accuracy-loose", "accuracy [overall]")] is None
    expired = outcome[("fairgate.accuracy-kept", "waiver expired on 2020-01-01")]
    assert expired[:2] == ("skipped", "expired-waiver")
    # counts in the suite match the testcases (the XSD cannot say that)
    tally = {tag: sum(1 for o in outcome.values() if o and o[0] == tag)
             for tag in ("failure", "error", "skipped")}
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == (str(len(outcome)), str(tally["failure"]),
                                      str(tally["error"]), str(tally["skipped"]))


def test_xsd_rejects_what_jenkins_would_misread(schema: xmlschema.XMLSchema) -> None:
    two = ('<testsuites><testsuite name="s" tests="1" failures="1" errors="1">'
           '<testcase name="a" classname="c"><failure/><error/></testcase></testsuite>'
           "</testsuites>")
    bad_count = ('<testsuites><testsuite name="s" tests="one" failures="0" errors="0"/>'
                 "</testsuites>")
    for xml in (two, bad_count):
        assert not schema.is_valid(xml)


@pytest.mark.parametrize("variant", ["fail", "pass", "warn"])
def test_junit_failures_iff_exit_code_1(variant: str, synthetic: Path, write_policy: Any,
                                        schema: xmlschema.XMLSchema) -> None:
    bound = {"fail": "max_increase: 0.0", "pass": "max_increase: 1.0",
             "warn": "max_increase: 0.0, severity: warn"}[variant]
    policy = write_policy(f"""\
        version: 1
        audit: {{label: y, positive_label: 1, sensitive: [sex, race]}}
        checks:
          - {{id: dp, metric: demographic_parity_difference, {bound}}}
        statistics: {{resamples: 0}}
        """)
    report = run_gate(GateRequest(policy=policy, data=synthetic, teacher_scores="t",
                                  student_scores="s", today=TODAY))
    xml = render_junit(report)
    schema.validate(xml)
    root = ET.fromstring(xml)
    blocking = int(root.get("failures", "0")) + int(root.get("errors", "0"))
    assert (blocking > 0) == (report.decision.exit_code == 1)
    assert report.verdict == variant


# ----------------------------------------------------------------------------- HTML


class _Node:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs, self.children, self.text = tag, attrs, [], ""

    def iter(self, tag: str | None = None, **attrs: str):
        if (tag is None or self.tag == tag) and all(self.attrs.get(k.replace("_", "-")) == v
                                                    for k, v in attrs.items()):
            yield self
        for c in self.children:
            yield from c.iter(tag, **attrs)

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class _Tree(HTMLParser):
    """A minimal DOM from the standard library parser (enough to read our own page)."""

    VOID: ClassVar[frozenset[str]] = frozenset({"br", "meta", "img", "hr", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.root = _Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(_Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        while self.stack[-1].tag != tag:
            self.stack.pop()
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(_Node("#text", {}))
        self.stack[-1].children[-1].text = data


def parse_html(text: str) -> _Node:
    tree = _Tree()
    tree.feed(text)
    tree.close()
    return tree.root


def _same(cell_value: str, expected: float | None) -> bool:
    return cell_value == "" if expected is None else float(cell_value) == expected


def _check_cells(row: _Node, d: dict[str, Any]) -> None:
    """teacher/student/delta cells hold report.json's numbers, exact and as shown."""
    for field, key, signed in (("teacher", "teacher", False), ("student", "student", False),
                               ("delta", "delta", True)):
        cell = next(row.iter("td", data_field=field))
        expected = d[key]
        assert _same(cell.attrs["data-value"], expected), (field, d)
        shown = fmt(math.nan if expected is None else expected, signed)
        assert cell.all_text().startswith(shown), (cell.all_text(), shown)
        interval = (d.get("interval") or {}).get(key)
        if interval is not None:
            assert [float(cell.attrs["data-lo"]), float(cell.attrs["data-hi"])] == interval
            lo, hi = (fmt(x, signed) for x in interval)
            assert f"[{lo}, {hi}]" in cell.all_text()


def _grouping(g: list[str]) -> str:
    return "*".join(g) if g else "overall"


def test_html_holds_the_numbers_of_report_json(scenario: GateReport) -> None:
    page = render_html(scenario)
    data = json.loads(json.dumps(to_dict(scenario)))
    root = parse_html(page)
    assert next(root.iter("header")).attrs["data-verdict"] == data["verdict"]
    rows = list(root.iter("tr", **{"class": "check"}))
    assert len(rows) == len(data["results"])
    for res in data["results"]:
        row = next(root.iter("tr", data_check=res["check"], data_grouping=_grouping(res["grouping"])))
        assert row.attrs["data-status"] == res["status"]
        _check_cells(row, res)
    kpi_rows = list(root.iter("tr", **{"class": "kpi"}))
    assert len(kpi_rows) == len(data["kpis"])
    for k in data["kpis"]:
        row = next(root.iter("tr", data_metric=k["metric"], data_grouping=_grouping(k["grouping"])))
        _check_cells(row, k)
    # significant groups: exactly those with Holm-adjusted McNemar p < 1 − confidence
    alpha = 1 - data["statistics"]["confidence"]
    expected = {("*".join(g["grouping"]), g["label"]): g["mcnemar"]["p_holm"]
                for g in data["groups"]
                if g["mcnemar"]["p_holm"] is not None and g["mcnemar"]["p_holm"] < alpha}
    assert expected, "the scenario should have a significant change to show"
    shown = {(r.attrs["data-grouping"], r.attrs["data-group"]):
             float(next(r.iter("td", data_field="p_holm")).attrs["data-value"])
             for r in root.iter("tr", **{"class": "sig"})}
    assert shown == expected
    # the waiver banners
    text = root.all_text()
    assert "1 check WAIVED" in text and "Expired waiver" in text and "2020-01-01" in text


def test_html_charts_place_each_group_rate_at_its_value(scenario: GateReport) -> None:
    data = to_dict(scenario)
    root = parse_html(render_html(scenario))
    for grouping in data["groupings"]:
        name = "*".join(grouping)
        block = next(root.iter("div", data_grouping=name))
        groups = [g for g in data["groups"] if g["grouping"] == grouping]
        for panel in block.iter("g", **{"class": "panel"}):
            rate = panel.attrs["data-rate"]
            lo, hi = float(panel.attrs["data-lo"]), float(panel.attrs["data-hi"])
            x0, width = float(panel.attrs["data-x0"]), float(panel.attrs["data-width"])
            drawn = 0
            for g in groups:
                cell = next(panel.iter("g", data_group=g["label"]))
                for role in ("teacher", "student"):
                    value = g[role][rate]
                    dots = list(cell.iter("circle", data_role=role))
                    if value is None:
                        assert not dots and "undefined" in cell.all_text()
                        continue
                    (dot,) = dots
                    assert float(dot.attrs["data-value"]) == value
                    assert lo <= value <= hi
                    assert float(dot.attrs["cx"]) == pytest.approx(
                        x0 + (value - lo) / (hi - lo) * width, abs=1e-3)
                    drawn += 1
            assert drawn > 0


def test_html_is_self_contained(scenario: GateReport) -> None:
    page = render_html(scenario)
    root = parse_html(page)
    tags = {n.tag for n in root.iter()}
    assert not tags & {"script", "link", "iframe", "img", "object", "embed"}
    assert not any(k in ("src", "href") for n in root.iter() for k in n.attrs)
    assert "url(" not in page and "@import" not in page and "http" not in page


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (0.0123, 0.0131), (-0.21, 0.13),
                                        (0.5, 0.5), (0.7697, 0.8)])
def test_nice_ticks_cover_the_range(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi, 4)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])


# ----------------------------------------------------------------------------- size and escaping


HOSTILE = ["B|<img src=x onerror=alert(1)>", "[click](https://evil.example)", "*bold* `code`",
           "line\nbreak", "ctrl\x01char"]


def _many_groups(path: Path, n_groups: int, rows: int) -> Path:
    rng = np.random.default_rng(3)
    pad = "-" + "x" * 110  # long labels, as free-text columns have
    df = pd.DataFrame({"zip": [f"zip{i:05d}{pad}" for i in rng.integers(0, n_groups, rows)],
                       "sex": rng.choice(["F", "M"], rows), "y": rng.integers(0, 2, rows)})
    df["t"] = np.clip(df.y * 0.3 + rng.random(rows) * 0.7, 0, 1)
    df["s"] = np.clip(df.y * 0.25 + rng.random(rows) * 0.7, 0, 1)
    df.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def many_groups(tmp_path_factory: pytest.TempPathFactory) -> GateReport:
    d = tmp_path_factory.mktemp("many")
    (d / "policy.yaml").write_text(textwrap.dedent("""\
        version: 1
        audit: {label: y, positive_label: 1, sensitive: [zip, sex], min_group_size: 5}
        checks:
          - {id: dp, metric: demographic_parity_difference, max_increase: 0.05}
          - {id: acc, metric: accuracy, max_decrease: 0.05}
        statistics: {resamples: 20}
        """))
    data = _many_groups(d / "audit.parquet", 1000, 20_000)
    return run_gate(GateRequest(policy=d / "policy.yaml", data=data, teacher_scores="t",
                                student_scores="s", today=TODAY))


def test_markdown_truncates_groups_and_says_so(many_groups: GateReport) -> None:
    md = render_markdown(many_groups)
    assert "Showing 50 of 1000 groups (summary size limit)" in md
    assert "<b>zip</b>: 1000 groups" in md and "<b>sex</b>: 2 groups" in md
    # the reference group is kept, then the strongest evidence of change
    reference = next(g for g in many_groups.groups if g.grouping.name == "zip" and g.reference)
    assert reference.group[0][:40] in md
    gated = [g for g in many_groups.groups if g.grouping.name == "zip" and g.gated]
    first = min(gated, key=lambda g: (g.mcnemar_p_holm, -g.n))
    last = max(gated, key=lambda g: (g.mcnemar_p_holm, -g.n))
    assert first.group[0][:40] in md and last.group[0][:40] not in md


def test_markdown_stays_under_the_step_summary_cap(scenario: GateReport) -> None:
    """A synthetic report of 12,000 groups with long labels, in two groupings."""
    template = scenario.groups[0]
    pad = "x" * 150
    fake = tuple(
        replace(template, grouping=grouping, group=(f"{grouping.name}-{i:05d}-{pad}",),
                reference=i == 0, mcnemar_p_holm=(i % 97) / 97)
        for grouping in scenario.groupings[:2] for i in range(6000)
    )
    big = replace(scenario, groups=fake)
    untruncated = render_markdown(big, max_bytes=10**9, group_rows=None)
    assert len(untruncated.encode()) > 2 * GITHUB_SUMMARY_LIMIT  # the cap matters here
    md = render_markdown(big)
    assert len(md.encode()) <= MAX_BYTES < GITHUB_SUMMARY_LIMIT
    assert md.count("Showing 50 of 6000 groups (summary size limit)") == 2
    assert "sex-00000-" in md  # the reference


def test_markdown_hard_cut_keeps_the_verdict_and_closes_details(many_groups: GateReport) -> None:
    md = render_markdown(many_groups, max_bytes=700)
    assert len(md.encode()) <= 700
    assert md.startswith("## ") and md.rstrip().endswith("see report.json.*")
    assert md.count("<details>") == md.count("</details>")


def test_hostile_group_labels_are_inert(tmp_path: Path, schema: xmlschema.XMLSchema) -> None:
    rng = np.random.default_rng(5)
    n = 2000
    df = pd.DataFrame({"g": rng.choice(HOSTILE, n), "y": rng.integers(0, 2, n)})
    df["t"] = rng.random(n)
    df["s"] = rng.random(n)
    df.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""\
        version: 1
        audit: {label: y, positive_label: 1, sensitive: [g]}
        checks:
          - {id: dp, metric: demographic_parity_difference, max_increase: 0.0}
        statistics: {resamples: 0}
        """))
    report = run_gate(GateRequest(policy=tmp_path / "p.yaml", data=tmp_path / "a.parquet",
                                  teacher_scores="t", student_scores="s", today=TODAY))
    md = render_markdown(report)
    assert "<img" not in md and "&lt;img src=x" in md
    assert not re.search(r"(?<!\\)\]\(https", md) and "\\[click\\](https" in md
    for line in md.splitlines():
        if line.startswith("| ") and "zip" not in line:
            # every table row of one table has the same number of unescaped pipes
            assert len(re.findall(r"(?<!\\)\|", line)) in (6, 7, 8, 9), line
    page = render_html(report)
    assert "<img" not in page and "&lt;img src=x" in page
    xml = render_junit(report)
    schema.validate(xml)
    assert "\x01" not in xml


def test_cli_writes_every_format_or_the_chosen_ones(synthetic: Path, write_policy: Any,
                                                   run_cli: Any, tmp_path: Path) -> None:
    assert set(reporters()) == {"json", "md", "junit", "html"}
    policy = write_policy(SYNTHETIC_POLICY)
    r = run_cli("check", "--policy", policy, "--data", synthetic, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    assert sorted(p.name for p in r.out.iterdir()) == ["junit.xml", "report.html", "report.json",
                                                       "report.md"]
    only = tmp_path / "only-md"
    r = run_cli("check", "--policy", policy, "--data", synthetic, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow", "--format", "md", "--out", only)
    assert sorted(p.name for p in only.iterdir()) == ["report.json", "report.md"]


def test_write_reports_renders_the_same_report(scenario: GateReport, tmp_path: Path) -> None:
    written = write_reports(scenario, tmp_path, ())
    assert {p.name for p in written} == {"report.json", "report.md", "junit.xml", "report.html"}
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == render_markdown(scenario)


# ----------------------------------------------------------------------------- per-group intervals

INTERVAL_POLICY = """\
version: 1
audit: {label: y, positive_label: 1, sensitive: [g], min_group_size: 50}
checks:
  - {id: acc, metric: accuracy, max_decrease: 0.2}
statistics: {resamples: 300, seed: 11, confidence: 0.9}
"""


def _reference_copies(joint: np.ndarray, seed: int, stream: str, resamples: int) -> np.ndarray:
    """The paired row bootstrap as the README states it, written out here: one multinomial
    draw of N over the cell shares, from PCG64 seeded with (seed, crc32 of the grouping's
    name); copies[B, groups, y, ŷ teacher, ŷ student]."""
    import zlib
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]))
    flat = joint.reshape(-1)
    n = int(flat.sum())
    return rng.multinomial(n, flat / n, size=resamples).reshape(resamples, *joint.shape)


def test_group_rate_intervals_are_percentiles_of_the_paired_copies(tmp_path: Path) -> None:
    """A tiny audit: groups a and b gated, c and d below min_group_size (pooled into one
    group in the copies). Counts by hand with pandas, copies by a reference bootstrap, rates
    and percentiles by numpy: each gated group's teacher, student and change intervals equal
    report.json's, and the overall accuracy's interval comes from the very same copies."""
    rng = np.random.default_rng(4)
    sizes = {"a": 160, "b": 90, "c": 30, "d": 20}
    g = np.repeat(list(sizes), list(sizes.values()))
    df = pd.DataFrame({"g": g, "y": rng.integers(0, 2, len(g))})
    df["t"] = (rng.random(len(g)) < 0.3 + 0.4 * df.y).astype(int)
    df["s"] = np.where(rng.random(len(g)) < 0.15, 1 - df.t, df.t)
    df.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "p.yaml").write_text(INTERVAL_POLICY)
    report = run_gate(GateRequest(policy=tmp_path / "p.yaml", data=tmp_path / "a.parquet",
                                  teacher_scores="t", student_scores="s", today=TODAY))
    data = to_dict(report)
    groups = {x["label"]: x for x in data["groups"]}
    # the hand count: cells (y, ŷ teacher, ŷ student) per group
    hand = {k: np.zeros((2, 2, 2), np.int64) for k in sizes}
    for (k, y, t, s), n in df.groupby(["g", "y", "t", "s"]).size().items():
        hand[k][y, t, s] = n
    for k in sizes:
        assert groups[k]["joint"] == hand[k].reshape(-1).tolist()
    # the bootstrap draws from [a, b, c + d]: a (the largest) is the reference
    table = np.stack([hand["a"], hand["b"], hand["c"] + hand["d"]])
    copies = _reference_copies(table, 11, "g", 300).astype(float)

    def rates(conf: np.ndarray) -> dict[str, np.ndarray]:  # conf[..., y, ŷ]
        with np.errstate(divide="ignore", invalid="ignore"):
            n = conf.sum(axis=(-1, -2))
            return {"selection_rate": conf[..., :, 1].sum(-1) / n,
                    "tpr": conf[..., 1, 1] / conf[..., 1, :].sum(-1),
                    "fpr": conf[..., 0, 1] / conf[..., 0, :].sum(-1),
                    "accuracy": (conf[..., 0, 0] + conf[..., 1, 1]) / n}

    teacher, student = rates(copies.sum(axis=-1)), rates(copies.sum(axis=-2))

    def pct(x: np.ndarray) -> list[float]:
        x = x[np.isfinite(x)]
        return np.percentile(x, [5, 95]).tolist()  # confidence 0.9

    for i, k in enumerate(["a", "b"]):
        iv = groups[k]["intervals"]
        assert set(iv) == {"selection_rate", "tpr", "fpr", "accuracy"}
        for rate in iv:
            t, s = teacher[rate][:, i], student[rate][:, i]
            assert iv[rate]["teacher"] == pytest.approx(pct(t), rel=1e-9, abs=1e-12)
            assert iv[rate]["student"] == pytest.approx(pct(s), rel=1e-9, abs=1e-12)
            assert iv[rate]["delta"] == pytest.approx(pct(s - t), rel=1e-9, abs=1e-12)
            assert iv[rate]["defined_share"] == float(np.mean(np.isfinite(t) & np.isfinite(s)))
            lo, hi = iv[rate]["teacher"]
            assert lo <= groups[k]["teacher"][rate] <= hi
    assert groups["c"]["intervals"] is None and groups["d"]["intervals"] is None
    # the same copies as the checks: overall accuracy's interval from their sums
    acc = next(v for v in data["kpis"] if v["metric"] == "accuracy")
    whole_t, whole_s = rates(copies.sum(axis=(1, -1))), rates(copies.sum(axis=(1, -2)))
    assert acc["interval"]["delta"] == pytest.approx(
        pct(whole_s["accuracy"] - whole_t["accuracy"]), rel=1e-9, abs=1e-12)


def test_no_group_intervals_without_resamples(tmp_path: Path) -> None:
    df = pd.DataFrame({"g": ["a", "b"] * 100, "y": [0, 1, 1, 0] * 50, "t": 0.7, "s": 0.2})
    df.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "p.yaml").write_text(INTERVAL_POLICY.replace("resamples: 300", "resamples: 0"))
    report = run_gate(GateRequest(policy=tmp_path / "p.yaml", data=tmp_path / "a.parquet",
                                  teacher_scores="t", student_scores="s", today=TODAY))
    assert all(g["intervals"] is None for g in to_dict(report)["groups"])
    assert "Δ [" not in render_markdown(report)
    assert 'class="ci" data-role' not in render_html(report)


# ----------------------------------------------------------------------------- report.md as GitHub shows it


def _gfm(md: str) -> _Node:
    """report.md through cmark-gfm (GitHub's renderer, tables on), raw HTML kept."""
    import cmarkgfm
    from cmarkgfm.cmark import Options
    return parse_html(cmarkgfm.github_flavored_markdown_to_html(md, options=Options.CMARK_OPT_UNSAFE))


def _number(text: str) -> bool:
    return re.fullmatch(r"[+-]?(\d[\d,]*(\.\d+)?|undef|—)( \[[^\]]*\])?( !)?", text.strip()) is not None


def test_markdown_renders_names_literally_and_numbers_right_aligned(scenario: GateReport) -> None:
    root = _gfm(render_markdown(scenario))
    assert not list(root.iter("em")), "a * from a name became emphasis"
    cells = [c.all_text() for c in root.iter("td")]
    assert "sex*race" in cells  # the intersection's name, as the policy spells it
    tables = list(root.iter("table"))
    assert len(tables) >= 5
    for table in tables:
        header = [th.all_text() for th in table.iter("th")]
        rights = [th.attrs.get("align") == "right" for th in table.iter("th")]
        for tr in next(table.iter("tbody")).iter("tr"):
            for name, right, td in zip(header, rights, tr.iter("td"), strict=True):
                text = td.all_text()
                assert (td.attrs.get("align") == "right") == right, (name, text)
                # numbers, and only numbers (counts, rates, intervals, p), right-aligned
                first = text.split("Δ")[0].split("→")[0]
                if name in ("teacher", "student", "change", "change (student − teacher)", "n",
                            "selection rate", "TPR", "FPR", "accuracy", "McNemar p (Holm)"):
                    assert right and _number(first), (name, text)
                elif name in ("check", "grouping", "group", "metric", "input"):
                    assert not right, name


def test_markdown_of_hostile_values_is_inert(tmp_path: Path) -> None:
    from tests.hostile.test_text_sinks import PAYLOADS, assert_markdown_inert
    rng = np.random.default_rng(2)
    values = [*PAYLOADS, "sex*age_group", "@octocat", "mail@example.com"]
    n = 40 * len(values)
    df = pd.DataFrame({"g": np.repeat(values, 40), "y": rng.integers(0, 2, n)})
    df["t"], df["s"] = rng.random(n), rng.random(n)
    df.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "p.yaml").write_text(INTERVAL_POLICY.replace("min_group_size: 50",
                                                             "min_group_size: 10"))
    report = run_gate(GateRequest(policy=tmp_path / "p.yaml", data=tmp_path / "a.parquet",
                                  teacher_scores="t", student_scores="s", today=TODAY))
    md = render_markdown(report)
    printable = [p for p in PAYLOADS if p.isprintable()]
    assert_markdown_inert(md, literal=[*printable, "sex*age_group"])
    root = _gfm(md)
    assert not list(root.iter("em")) and not list(root.iter("a")) and not list(root.iter("img"))
    text = root.all_text()
    # no @mention or e-mail link: a zero-width space follows every @
    assert "@\u200boctocat" in text and "mail@\u200bexample.com" in text
    assert "@octocat" not in text


# ----------------------------------------------------------------------------- report.html layout


def test_html_group_panels_draw_intervals_on_one_axis(scenario: GateReport) -> None:
    data = to_dict(scenario)
    root = parse_html(render_html(scenario))
    for grouping in data["groupings"]:
        block = next(root.iter("div", data_grouping="*".join(grouping)))
        panels = list(block.iter("g", **{"class": "panel"}))
        assert [p.attrs["data-rate"] for p in panels] == ["selection_rate", "tpr", "fpr",
                                                          "accuracy"]
        # one axis for every panel of the grouping
        assert len({(p.attrs["data-lo"], p.attrs["data-hi"], p.attrs["data-width"])
                    for p in panels}) == 1
        groups = [g for g in data["groups"] if g["grouping"] == grouping]
        drawn = 0
        for panel in panels:
            rate = panel.attrs["data-rate"]
            lo, hi = float(panel.attrs["data-lo"]), float(panel.attrs["data-hi"])
            x0, width = float(panel.attrs["data-x0"]), float(panel.attrs["data-width"])
            for g in groups:
                cell = next(panel.iter("g", data_group=g["label"]))
                lines = {ln.attrs["data-role"]: ln for ln in cell.iter("line", **{"class": "ci"})}
                if g["intervals"] is None:
                    assert not lines
                    continue
                for role in ("teacher", "student"):
                    expected = g["intervals"][rate][role]
                    if expected is None or g[role][rate] is None:
                        assert role not in lines
                        continue
                    ln = lines[role]
                    assert [float(ln.attrs["data-lo"]), float(ln.attrs["data-hi"])] == expected
                    for end, x in zip(expected, (ln.attrs["x1"], ln.attrs["x2"]), strict=True):
                        assert lo <= end <= hi
                        assert float(x) == pytest.approx(x0 + (end - lo) / (hi - lo) * width,
                                                         abs=1e-2)
                    drawn += 1
        assert drawn > 0
        # the table gives each rate's change with its interval
        for g in groups:
            row = next(block.iter("tr", data_group=g["label"]))
            cell = next(row.iter("td", data_field="delta_tpr"))
            if g["intervals"] and g["intervals"]["tpr"]["delta"] is not None:
                assert [float(cell.attrs["data-lo"]), float(cell.attrs["data-hi"])] == \
                    g["intervals"]["tpr"]["delta"]


def test_html_is_responsive_by_construction(scenario: GateReport) -> None:
    """Each chart scales (viewBox, width 100%), each table scrolls in its own wrapper; the
    browser test (tests/test_browser.py) measures the result in Chromium."""
    page = render_html(scenario)
    root = parse_html(page)
    for svg in root.iter("svg"):
        w, h = svg.attrs["width"], svg.attrs["height"]
        assert svg.attrs["viewbox"] == f"0 0 {w} {h}"
    assert "svg{display:block;margin:6px 0;width:100%;height:auto}" in page
    wrapped = {id(t) for d in root.iter("div", **{"class": "scroll"}) for t in d.iter("table")}
    assert wrapped == {id(t) for t in root.iter("table")}


COUNT_POLICY = """\
version: 1
audit: {label: y, positive_label: 1, sensitive: [sex, race], min_group_size: 100}
checks:
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.02}
  - {id: lost, metric: significant_accuracy_loss_groups, max: 0}
statistics: {resamples: 100}
"""


def test_html_draws_counts_on_their_own_axis(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(COUNT_POLICY)
    data = scenario_data(tmp_path / "a.parquet")
    report = run_gate(GateRequest(policy=tmp_path / "p.yaml", data=data, teacher_scores="t",
                                  student_scores="s", today=TODAY))
    lost = [r for r in report.decision.results if r.check.id == "lost"]
    assert lost and all(float(r.value.student).is_integer() for r in lost)
    root = parse_html(render_html(report))
    rates, counts = (next(s for s in root.iter("svg")
                          if s.attrs["class"] == cls) for cls in ("forest", "forest counts"))
    assert {g.attrs["data-check"] for g in counts.iter("g", **{"class": "check-row"})} == {"lost"}
    assert {g.attrs["data-check"] for g in rates.iter("g", **{"class": "check-row"})} == {"dp"}
    # whole-number ticks on the count axis
    ticks = [t.all_text() for t in counts.iter("text") if re.fullmatch(r"[+-]?\d+(\.\d+)?",
                                                                       t.all_text())]
    assert ticks and all(re.fullmatch(r"[+-]?\d+", t) for t in ticks)
    md = render_markdown(report)
    for r in lost:  # a count is a whole number in every table
        v = int(r.value.student)
        assert f"| {v} | " in md or f"| {v} [" in md
        row = next(root.iter("tr", data_check="lost", data_grouping=r.key.grouping.name))
        assert next(row.iter("td", data_field="student")).all_text() == str(v)


def test_reports_name_their_inputs(scenario: GateReport) -> None:
    data = to_dict(scenario)
    root = parse_html(render_html(scenario))
    rows = {r.attrs["data-input"]: r.all_text() for r in root.iter("tr", **{"class": "input"})}
    assert set(rows) == {"policy", "data", "teacher", "student", "engine"}
    assert f"sha256 {data['inputs']['policy']['sha256']}" in rows["policy"]
    assert data["inputs"]["data"]["fingerprint"] in rows["data"]
    assert data["run"]["engine"]["name"] in rows["engine"]
    for role in ("teacher", "student"):  # score columns: which column, read how
        assert data["inputs"][role]["output"]["how"].replace(">", ">") in rows[role]
    md = render_markdown(scenario)
    section = md.split("### Inputs", 1)[1]
    assert f"sha256 {data['inputs']['policy']['sha256']}" in section
    assert data["inputs"]["data"]["fingerprint"] in section


def test_status_colours_meet_wcag_aa() -> None:
    """Text colours against white and the striped-row grey: at least 4.5:1 (WCAG 2.x
    relative luminance, computed here); white on the verdict banner too."""
    from fairgate.report import html as page

    def lum(hex_: str) -> float:
        c = [int(hex_.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        c = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    def ratio(a: str, b: str) -> float:
        hi, lo = sorted((lum(a), lum(b)), reverse=True)
        return (hi + 0.05) / (lo + 0.05)

    for colour in [*page.COLOR.values(), page.MUTED]:
        assert ratio(colour, "#ffffff") >= 4.5 and ratio(colour, "#f8f9fa") >= 4.5, colour
    for colour in page._VERDICT_COLOR.values():
        assert ratio("#ffffff", colour) >= 4.5, colour


def test_group_intervals_from_the_metrics_pass_equal_their_own_draw() -> None:
    """evaluate() takes the groups' copies from the metrics' pass; report_groups() alone
    draws the stream again. Both read the same copies, so the intervals are equal, for a
    pooled table (ungated groups) and for a grouping no metric reads."""
    from fairgate.core.counts import Grouping, GroupingCounts
    from fairgate.core.evaluate import (
        MetricKey,
        Settings,
        compute_values,
        context_for,
        evaluate,
        pool_ungated,
        report_groups,
    )

    rng = np.random.default_rng(9)
    g, h = Grouping(("g",)), Grouping(("h",))
    counts = {x: GroupingCounts(x, tuple((str(i),) for i in range(k)),
                                rng.integers(0, 40, (k, 2, 2, 2)) * (rng.random((k, 1, 1, 1)) < 0.9))
              for x, k in ((g, 7), (h, 3))}
    settings = Settings(min_group_size=150, reference_groups={}, confidence=0.95,
                        resamples=400, seed=5)
    keys = [MetricKey("demographic_parity_difference", g), MetricKey("accuracy", None)]
    values, found = evaluate(keys, counts, settings, [g, h])
    alone = compute_values(keys, counts, settings)  # the metrics do not change
    assert {k: v.delta_interval for k, v in values.items()} == \
        {k: v.delta_interval for k, v in alone.items()}
    assert set(found) == {g, h} and found[g] and found[h]
    rows, _ = report_groups(counts, [g, h], settings)  # draws both streams itself
    drawn = {(r.grouping, r.group): r.intervals for r in rows}
    for grouping, per_group in found.items():
        for group, ivs in per_group.items():
            assert drawn[(grouping, group)] == ivs
    for x in (g, h):  # both tables are pooled (two groups or more below 150 rows)
        assert len(pool_ungated(counts[x].cells, context_for(counts[x], settings))[0]) < \
            len(counts[x].groups)
    for r in rows:
        assert bool(r.intervals) == (r.gated or r.reference)
    assert evaluate(keys, counts, Settings(150, {}, 0.95, 0, 5), [g])[1] == {}


def test_at_most_100_groups_a_grouping_get_intervals(many_groups: GateReport) -> None:
    """1,000 gated zip codes: the reference and the 99 with the smallest Holm-adjusted
    McNemar p (then the largest) get intervals, the order reports show groups in."""
    zips = [g for g in to_dict(many_groups)["groups"] if g["grouping"] == ["zip"]]
    assert len(zips) == 1000 and all(g["gated"] for g in zips)
    with_iv = [g for g in zips if g["intervals"] is not None]
    assert len(with_iv) == 100
    assert any(g["reference"] for g in with_iv)

    def key(g: dict[str, Any]) -> tuple[float, int]:
        return (g["mcnemar"]["p_holm"], -g["n"])

    others = [key(g) for g in zips if g["intervals"] is None]
    assert max(key(g) for g in with_iv if not g["reference"]) <= min(others)
