"""The terminal report fits the terminal, follows the colour conventions, and shows the
progress of long passes on stderr (plain lines in a log, nothing for short runs, --quiet)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairgate.report import console, safe
from fairgate.report.progress import Progress, duration
from fairgate.report.terminal import fit_table, wrap
from tests.conftest import EXAMPLE, ROOT, CliResult

ADULT_POLICY = EXAMPLE / "policy.yaml"
SGR = re.compile(r"\x1b\[[0-9;]*m")
WIDE_POLICY = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
  intersections: true
checks:
  - id: dp-a-rather-long-check-identifier
    metric: demographic_parity_difference
    max_increase: 0.02
  - id: eo
    metric: equalized_odds_difference
    max_increase: 0.02
  - id: acc
    metric: accuracy
    max_decrease: 0.05
statistics:
  resamples: 200
  decide_on: estimate
"""


def _check(run_cli: Callable[..., CliResult], policy: Path, data: Path, *extra: str
           ) -> CliResult:
    return run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "t",
                   "--student-scores", "s", "--no-mlflow", *extra)


def _visible(text: str) -> str:
    return SGR.sub("", text)


def _assert_fits(text: str, width: int) -> None:
    long = [x for x in _visible(text).splitlines() if len(x) > width]
    assert not long, long


@pytest.fixture
def gate(synthetic: Path, write_policy: Callable[..., Path],
         run_cli: Callable[..., CliResult]) -> Callable[..., CliResult]:
    policy = write_policy(WIDE_POLICY)
    return lambda *extra: _check(run_cli, policy, synthetic, *extra)


@pytest.mark.parametrize("width", [80, 120, 200])
@pytest.mark.parametrize("colour", ["--color", "--no-color"])
def test_the_report_fits_the_width_and_keeps_every_status_and_value(
        gate: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, width: int,
        colour: str) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    r = gate(colour)
    assert r.exit_code == 1, r.stderr
    _assert_fits(r.stdout, width)
    assert ("\x1b[" in r.stdout) is (colour == "--color")
    shown = _visible(r.stdout)
    flat = " ".join(shown.split())  # a value wrapped at a space is still there, whole
    for res in r.report["results"]:
        assert res["check"] in shown
        assert res["status"].upper() in shown
        for key in ("teacher", "student"):
            if res[key] is not None:
                assert f"{res[key]:.4f}" in flat, (res["check"], key)
        if res["delta"] is not None:
            assert f"{res['delta']:+.4f}" in flat
    assert "Groups of" in shown and "FAIL" in shown
    # 200: the whole table; 120: a table without the two least needed columns, named; 80:
    # stacked, every cell as "name: value"
    table = any(x.startswith("status") and "change (student − teacher)" in x
                for x in shown.splitlines())
    assert table is (width > 80)
    assert ("detects (80%), metric left out to fit 120 columns" in shown) is (width == 120)
    assert ("metric: demographic_parity_difference" in shown) is (width == 80)


def test_without_a_terminal_or_columns_rows_stay_on_one_line(
        gate: Callable[..., CliResult]) -> None:
    """A pipe or a CI log: the checks table as before, one greppable line per check."""
    r = gate("--no-color")
    lines = r.stdout.splitlines()
    for res in r.report["results"]:
        grouping = "*".join(res["grouping"]) or "overall"
        assert any(res["check"] in x and grouping in x and res["status"].upper() in x
                   and "detects (80%)" not in x for x in lines)
    assert any("detects (80%)" in x for x in lines)
    assert max(len(x) for x in lines) > 120


def test_a_dropped_column_is_named(gate: Callable[..., CliResult],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the full table and the stacked layout, the detection column goes first, and
    the report says so."""
    full = gate("--no-color").stdout
    header = next(x for x in full.splitlines() if x.startswith("status"))
    monkeypatch.setenv("COLUMNS", str(header.index("detects (80%)")))
    r = gate("--no-color")
    assert "detects (80%) left out to fit" in r.stdout
    assert "change (student − teacher)" in r.stdout  # still a table


@pytest.mark.parametrize(("env", "coloured"), [
    ({}, False),  # not a terminal
    ({"FORCE_COLOR": "1"}, True),
    ({"FORCE_COLOR": "0"}, False),
    ({"GITHUB_ACTIONS": "true"}, True),  # the Actions log renders ANSI
    ({"GITHUB_ACTIONS": "true", "NO_COLOR": "1"}, False),
    ({"FORCE_COLOR": "1", "NO_COLOR": "x"}, False),  # NO_COLOR wins
    ({"FORCE_COLOR": "1", "TERM": "dumb"}, True),  # forced on purpose
    ({"GITHUB_ACTIONS": "true", "TERM": "dumb"}, False),
])
def test_colour_conventions(gate: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch,
                            env: dict[str, str], coloured: bool) -> None:
    monkeypatch.setenv("TERM", "xterm")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = gate()
    assert ("\x1b[" in r.stdout) is coloured
    assert "\x1b" not in r.stderr


def test_the_flag_beats_the_environment(gate: Callable[..., CliResult],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" in gate("--color").stdout
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR")
    assert "\x1b[" not in gate("--no-color").stdout


def test_width_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert console.width(io.StringIO()) is None
    monkeypatch.setenv("COLUMNS", "100")
    assert console.width(io.StringIO()) == 100
    monkeypatch.setenv("COLUMNS", "10")
    assert console.width(io.StringIO()) == console.MIN_WIDTH
    monkeypatch.setenv("COLUMNS", "wide")
    assert console.width(io.StringIO()) is None
    assert isinstance(console.width(Tty()), int)
    monkeypatch.setenv("TERM", "xterm")
    assert console.color(None, Tty()) is True
    monkeypatch.setenv("TERM", "dumb")
    assert console.color(None, Tty()) is False


def test_stacked_layout_keeps_every_cell() -> None:
    rows = [["FAIL", "a-check", "x" * 30, "0.1234", "a long value with spaces " * 4]]
    header = ["status", "check", "metric", "value", "note"]
    lines, dropped = fit_table(rows, header, 40)
    assert not dropped and all(len(x) <= 40 for _, x in lines)
    text = " ".join(" ".join(x for _, x in lines).split())
    assert lines[0][1].startswith("FAIL")
    for cell in rows[0]:
        assert " ".join(cell.split()) in text
    assert wrap("x" * 100, 40)[0] == "x" * 40  # a long word is split, not cut
    assert "".join(x.strip() for x in wrap("x" * 100, 40)) == "x" * 100


def test_compare_and_plan_fit(synthetic: Path, write_policy: Callable[..., Path],
                              run_cli: Callable[..., CliResult], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    df = pd.read_parquet(synthetic)
    df["s2"] = np.clip(df["t"] + 0.01, 0, 1)
    data = tmp_path / "two.parquet"
    df.to_parquet(data)
    policy = write_policy(WIDE_POLICY)
    for width in (80, 120):
        monkeypatch.setenv("COLUMNS", str(width))
        r = run_cli("compare", "--policy", policy, "--data", data, "--teacher-scores", "t",
                    "--candidate-scores", "s", "--candidate-scores", "s2",
                    "--out", tmp_path / f"cmp{width}", "--no-mlflow")
        assert r.exit_code in (0, 1), r.stderr
        _assert_fits(r.stdout, width)
        assert "teacher: " in r.stdout and "verdict: " in r.stdout
        p = run_cli("plan", "--policy", policy, "--data", data, "--teacher-scores", "t")
        assert p.exit_code in (0, 1), p.stderr
        _assert_fits(p.stdout, width)
        assert "dp-a-rather-long-check-identifier" in p.stdout


# ----------------------------------------------------------------------------- progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_lines_at_an_interval() -> None:
    clock, lines = Clock(), []
    p = Progress(1000, "audit\x1b[2J.parquet", live=False, clock=clock, interval=10,
                 emit=lines.append)
    for _ in range(4):
        clock.now += 4
        p.update(200)
    p.close()
    assert len(lines) == 2  # one after 12 s (the first interval), one with the totals
    assert lines[0] == ("fairgate: read 600 of 1,000 rows (60%) from audit\\x1b[2J.parquet, "
                        "50 rows/s, elapsed 0:12, about 0:08 left")
    assert lines[1].startswith("fairgate: done, read 800 of 1,000 rows (80%)")
    assert all("\x1b" not in x for x in lines)


def test_a_short_run_prints_nothing_and_unknown_totals_have_no_eta() -> None:
    clock, lines = Clock(), []
    p = Progress(None, "a.csv", live=False, clock=clock, emit=lines.append)
    clock.now = 1.5
    p.update(10_000)
    p.close()
    assert lines == []
    p = Progress(None, "a.csv", live=False, clock=clock, interval=1, emit=lines.append)
    clock.now = 5
    p.update(10)
    p.close(done=False)  # the pass failed: no totals line
    assert lines == ["fairgate: read 10 rows from a.csv, 3 rows/s, elapsed 0:03"]
    assert duration(3725) == "1:02:05"


def test_the_live_bar_writes_through_the_guard(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    p = Progress(100, "x##[error]y", live=True, clock=clock, delay=0)
    p.update(50)
    p.close()
    err = capsys.readouterr().err
    assert "#\\x23[error]" in err and "##[" not in err
    assert "\r" in err and "\x1b" not in err


@pytest.fixture
def slow_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading of the progress clock is 5 s after the last one: deterministic lines."""
    ticks = iter(range(0, 10**6, 5))
    monkeypatch.setattr("fairgate.report.progress.time.monotonic", lambda: float(next(ticks)))


def test_check_shows_progress_on_stderr_and_quiet_hides_it(
        gate: Callable[..., CliResult], slow_clock: None) -> None:
    r = gate("--no-color", "--batch-size", "1000")
    assert r.exit_code == 1
    progress = [x for x in r.stderr.splitlines() if x.startswith("fairgate: ")]
    assert progress and "of 5,000 rows" in progress[0] and "left" in progress[0]
    assert progress[-1].startswith("fairgate: done, read 5,000 of 5,000 rows (100%)")
    assert "rows/s" not in r.stdout
    quiet = gate("--no-color", "--batch-size", "1000", "--quiet")
    assert quiet.exit_code == 1 and "rows/s" not in quiet.stderr
    assert quiet.stdout == r.stdout


def test_a_fast_check_prints_no_progress(gate: Callable[..., CliResult]) -> None:
    r = gate("--no-color", "--batch-size", "1000")
    assert "rows/s" not in r.stderr


def test_readme_documents_the_terminal() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for word in ("NO_COLOR", "FORCE_COLOR", "TERM=dumb", "COLUMNS", "--quiet"):
        assert word in readme
    assert safe.terminal("ok") == "ok"
