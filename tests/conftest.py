"""Shared fixtures: a small synthetic audit set with score columns, and a CLI runner."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fairgate.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "adult"
MODELS = ROOT / "tests" / "fixtures" / "models"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    out: Path

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's output does not depend on the shell or CI it runs in: no width limit, the
    colour rules' defaults (tests that want them set these themselves)."""
    for name in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    """5,000 rows: label y, sensitive sex and race, teacher/student scores t and s."""
    rng = np.random.default_rng(0)
    n = 5000
    df = pd.DataFrame({
        "sex": rng.choice(["F", "M"], n),
        "race": rng.choice(["A", "B", "C"], n, p=[0.6, 0.3, 0.1]),
        "y": rng.integers(0, 2, n),
    })
    df["t"] = np.clip(df.y * 0.3 + rng.random(n) * 0.7, 0, 1)
    df["s"] = np.clip(df.y * 0.25 + rng.random(n) * 0.7 + (df.sex == "F") * 0.08, 0, 1)
    path = tmp_path / "audit.parquet"
    df.to_parquet(path)
    return path


SYNTHETIC_POLICY = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
  intersections: true
checks:
  - id: dp
    metric: demographic_parity_difference
    max_increase: 0.02
  - id: acc
    metric: accuracy
    max_decrease: 0.05
statistics:
  resamples: 200
"""


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "policy.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run `fairgate ARGS` in-process; --out defaults to tmp_path/out."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str | Path) -> CliResult:
        argv = [str(a) for a in args]
        out = tmp_path / "out"
        if argv and argv[0] == "check" and "--out" not in argv:
            argv += ["--out", str(out)]
        elif "--out" in argv:
            out = Path(argv[argv.index("--out") + 1])
        result = CliRunner().invoke(main, argv, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr, out)

    return run
