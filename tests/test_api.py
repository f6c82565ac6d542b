"""The Python API (fairgate.check / compare / load_policy): the CLI's twin.

Same inputs through the API and the CLI give the same report.json apart from ``run``;
in-memory inputs (a DataFrame, an Arrow table, model bytes) give the values file inputs
give; errors are the CLI's messages as exceptions of the hierarchy; nothing is printed.
Values are also checked against independent computations (pandas, onnxruntime directly).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pytest

import fairgate
import fairgate.run
from fairgate import check, compare, load_policy
from fairgate.errors import DataError, FairgateError, ModelError, PolicyError, UsageError
from tests.conftest import EXAMPLE, MODELS, ROOT, SYNTHETIC_POLICY
from tests.oracles import onnx_decisions
from tests.test_cli import FEATURES_POLICY, scores

ADULT = EXAMPLE / "policy.yaml"
STUDENT = EXAMPLE / "student_distilled_T4.onnx"
LOOSE = (SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.5")
         .replace("max_decrease: 0.05", "max_decrease: 0.5"))
TIGHT = SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.0")


def same(a: dict, b: dict, *, inputs: bool = True) -> None:
    """Two report.json dicts agree on everything but ``run`` (and ``inputs``, if told)."""
    skip = {"run"} | (set() if inputs else {"inputs"})
    assert {k: v for k, v in a.items() if k not in skip} == \
        {k: v for k, v in b.items() if k not in skip}


def via_api(report) -> dict:
    # the dict as written to report.json: through JSON, as the CLI's file is read back
    return json.loads(json.dumps(report.to_dict(), allow_nan=False))


# ----------------------------------------------------------------------------- CLI twins


@pytest.mark.parametrize(("policy", "verdict"), [(LOOSE, "pass"), (TIGHT, "fail")])
def test_scores_gate_twin(synthetic, write_policy, run_cli, capsys, policy, verdict) -> None:
    path = write_policy(policy)
    cli = scores(run_cli, path, synthetic)
    capsys.readouterr()
    report = check(path, synthetic, teacher_scores="t", student_scores="s")
    assert capsys.readouterr().out == ""
    assert report.verdict == verdict == cli.report["verdict"]
    assert report.exit_code == cli.exit_code and report.passed is (verdict == "pass")
    same(via_api(report), cli.report)


def test_warn_twin(synthetic, write_policy, run_cli) -> None:
    text = SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.0\n    severity: warn") \
        .replace("max_decrease: 0.05", "max_decrease: 0.5")
    path = write_policy(text)
    cli = scores(run_cli, path, synthetic)
    report = check(path, synthetic, teacher_scores="t", student_scores="s")
    assert report.verdict == "warn" and report.passed and report.exit_code == 0
    same(via_api(report), cli.report)


def test_example_onnx_twin(run_cli, capsys) -> None:
    cli = run_cli("check", "--policy", ADULT, "--data", EXAMPLE / "audit.parquet", "--teacher",
                  EXAMPLE / "teacher.onnx", "--student", STUDENT, "--no-mlflow")
    capsys.readouterr()
    report = check(ADULT, EXAMPLE / "audit.parquet", teacher=EXAMPLE / "teacher.onnx",
                   student=STUDENT)
    assert capsys.readouterr().out == ""
    assert not report.passed and report.exit_code == cli.exit_code == 1
    same(via_api(report), cli.report)
    eo = report.values["equalized_odds_difference [sex]"]
    assert eo.delta > 0.02 and report.intervals["equalized_odds_difference [sex]"].lo > 0


def test_undefined_twin(tmp_path, write_policy, run_cli) -> None:
    df = pd.DataFrame({"g": ["A"] * 50 + ["B"] * 50 + ["C"] * 50,
                       "y": [1, 0] * 25 + [1, 0] * 25 + [0] * 50,
                       "t": np.tile([0.9, 0.1], 75), "s": np.tile([0.8, 0.2], 75)})
    data = tmp_path / "a.csv"
    df.to_csv(data, index=False)
    path = write_policy("""\
        version: 1
        audit: {label: y, positive_label: 1, sensitive: [g]}
        checks:
          - id: eop
            metric: equal_opportunity_difference
            max_increase: 0.5
        statistics: {resamples: 0}
        """)
    cli = scores(run_cli, path, data)
    report = check(path, data, teacher_scores="t", student_scores="s")
    assert report.results[0].status.value == "undefined" and not report.passed
    assert report.results[0].value.teacher_reason == "tpr is undefined for C: no positive labels"
    same(via_api(report), cli.report)


def test_reports_written_only_when_out_is_given(synthetic, write_policy, tmp_path,
                                                 monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_policy(LOOSE)
    check(path, synthetic, teacher_scores="t", student_scores="s")
    assert not (tmp_path / "fairgate-report").exists()
    out = tmp_path / "api-out"
    report = check(path, synthetic, teacher_scores="t", student_scores="s", out=out,
                   formats=["json", "md"])
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    same(json.loads((out / "report.json").read_text()), via_api(report))


# ----------------------------------------------------------------------------- in memory


def test_dataframe_and_arrow_equal_the_file(synthetic, write_policy) -> None:
    path = write_policy(SYNTHETIC_POLICY)
    frame = pd.read_parquet(synthetic)
    from_file = check(path, synthetic, teacher_scores="t", student_scores="s")
    from_frame = check(path, frame, teacher_scores="t", student_scores="s")
    from_arrow = check(path, pa.Table.from_pandas(frame), teacher_scores="t",
                       student_scores="s", batch_size=777)
    for other in (from_frame, from_arrow):
        same(via_api(other), via_api(from_file), inputs=False)
    data = from_frame.inputs["data"]
    assert data["path"] == "in-memory pandas DataFrame" and data["rows"] == 5000
    assert from_arrow.inputs["data"]["given_as"] == "pyarrow Table"

    # oracle: selection rates by sex computed here, the gap's change from them
    def gap(col: str) -> float:
        rates = (frame[col] >= 0.5).groupby(frame["sex"]).mean()
        return float(rates.max() - rates.min())

    dp = from_frame.values["demographic_parity_difference [sex]"]
    assert dp.teacher == pytest.approx(gap("t"), abs=1e-12)
    assert dp.student == pytest.approx(gap("s"), abs=1e-12)
    acc = from_frame.values["accuracy"]
    assert acc.student == pytest.approx(float(((frame.s >= 0.5) == frame.y).mean()), abs=1e-12)


def test_model_bytes_equal_the_files(capsys) -> None:
    frame = pd.read_parquet(EXAMPLE / "audit.parquet")
    teacher, student = EXAMPLE / "teacher.onnx", STUDENT
    from_files = check(ADULT, EXAMPLE / "audit.parquet", teacher=teacher, student=student,
                       seed=1)
    in_memory = check(ADULT, frame, teacher=teacher.read_bytes(),
                      student=bytearray(student.read_bytes()), seed=1)
    assert capsys.readouterr().out == ""
    same(via_api(in_memory), via_api(from_files), inputs=False)
    for role in ("teacher", "student"):
        got, want = in_memory.inputs[role], from_files.inputs[role]
        assert got["sha256"] == want["sha256"]
        assert got["given_as"] == "bytes" and got["path"].startswith(f"in-memory {role} model")
        assert {k: v for k, v in got.items() if k not in ("path", "given_as")} == \
            {k: v for k, v in want.items() if k != "path"}
    # oracle: the student's accuracy from onnxruntime run here
    y = (frame["income"] == ">50K").to_numpy()
    acc = float((onnx_decisions(student, frame) == y).mean())
    assert in_memory.values["accuracy"].student == pytest.approx(acc, abs=1e-12)


def test_an_inference_session_is_refused() -> None:
    session = ort.InferenceSession(str(EXAMPLE / "teacher.onnx"),
                                   providers=["CPUExecutionProvider"])
    with pytest.raises(UsageError, match="InferenceSession does not expose the model") as e:
        check(ADULT, EXAMPLE / "audit.parquet", teacher=session, student=STUDENT)
    assert e.value.exit_code == 2


def test_other_objects_are_refused() -> None:
    with pytest.raises(UsageError, match=r"data: give a path .* not a builtins\.dict"):
        check(ADULT, {"a": [1]}, teacher_scores="t", student_scores="s")
    with pytest.raises(UsageError, match="student: give a path, an MLflow URI or the bytes"):
        check(ADULT, EXAMPLE / "audit.parquet", teacher=EXAMPLE / "teacher.onnx", student=3)


def test_in_memory_data_needs_the_local_engine(synthetic, write_policy) -> None:
    with pytest.raises(UsageError, match="in-memory pandas DataFrame: Spark reads files"):
        check(write_policy(SYNTHETIC_POLICY), pd.read_parquet(synthetic), teacher_scores="t",
              student_scores="s", engine="spark")


def test_in_memory_data_errors_name_it(write_policy) -> None:
    frame = pd.DataFrame({"sex": ["F", "M"] * 30, "race": ["A"] * 60, "y": [0, 1] * 30,
                          "t": 0.5, "s": [0.3, 1.7, 0.4, 0.6] * 15})
    policy = write_policy(SYNTHETIC_POLICY)
    with pytest.raises(DataError, match=re.escape("in-memory pandas DataFrame: student scores "
                                                  "column 's': row 1 has 1.7")):
        check(policy, frame, teacher_scores="t", student_scores="s")
    with pytest.raises(DataError, match=re.escape("in-memory pandas DataFrame: column 'y' not "
                                                  "found (columns: sex, race, t, s)")):
        check(policy, frame.drop(columns="y"), teacher_scores="t", student_scores="s")
    with pytest.raises(DataError, match="the audit set has no rows"):
        check(policy, frame.head(0), teacher_scores="t", student_scores="s")


# ----------------------------------------------------------------------------- errors


def cli_message(result) -> str:
    assert result.stderr.startswith("fairgate: error: ")
    return result.stderr.removeprefix("fairgate: error: ").rstrip("\n")


@pytest.mark.parametrize(("kwargs", "args", "cls"), [
    ({}, (), UsageError),
    ({"teacher": "t.onnx", "teacher_scores": "t", "student_scores": "s"},
     ("--teacher", "t.onnx", "--teacher-scores", "t", "--student-scores", "s"), UsageError),
    ({"teacher_scores": "tt", "student_scores": "s"},
     ("--teacher-scores", "tt", "--student-scores", "s"), DataError),
])
def test_errors_are_the_cli_messages(synthetic, write_policy, run_cli, capsys, kwargs, args,
                                     cls) -> None:
    policy = write_policy(SYNTHETIC_POLICY)
    cli = run_cli("check", "--policy", policy, "--data", synthetic, "--no-mlflow", *args)
    capsys.readouterr()
    with pytest.raises(cls) as e:
        check(policy, synthetic, **kwargs)
    assert capsys.readouterr() == ("", "")
    assert e.value.exit_code == cli.exit_code
    assert str(e.value) == cli_message(cli)


def test_policy_and_data_errors(write_policy, run_cli, tmp_path) -> None:
    bad = write_policy("version: 1\naudit: {label: y}\n")
    cli = run_cli("policy", "validate", bad)
    with pytest.raises(PolicyError) as e:
        load_policy(bad)
    assert e.value.exit_code == cli.exit_code == 2 and str(e.value) == cli_message(cli)
    with pytest.raises(PolicyError):
        check(bad, tmp_path / "x.parquet", teacher_scores="t", student_scores="s")
    missing = tmp_path / "nope.parquet"
    policy = write_policy(SYNTHETIC_POLICY)
    cli = scores(run_cli, policy, missing)
    with pytest.raises(DataError) as d:
        check(policy, missing, teacher_scores="t", student_scores="s")
    assert d.value.exit_code == 3 and str(d.value) == cli_message(cli)


def test_model_errors_are_the_cli_messages(write_policy, run_cli, tmp_path) -> None:
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_text("hello")
    policy = write_policy(FEATURES_POLICY)
    cli = run_cli("check", "--policy", policy, "--data", EXAMPLE / "audit.parquet", "--teacher",
                  MODELS / "lr_nozipmap.onnx", "--student", not_onnx, "--no-mlflow")
    with pytest.raises(ModelError) as e:
        check(policy, EXAMPLE / "audit.parquet", teacher=MODELS / "lr_nozipmap.onnx",
              student=not_onnx)
    assert str(e.value) == cli_message(cli)
    with pytest.raises(ModelError, match="not an ONNX model"):  # bytes: the same check
        check(policy, EXAMPLE / "audit.parquet", teacher=MODELS / "lr_nozipmap.onnx",
              student=b"hello")


def test_unexpected_exceptions_propagate(synthetic, write_policy, monkeypatch) -> None:
    def boom(loaded, request):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(fairgate.run, "evaluate_policy", boom)
    with pytest.raises(RuntimeError, match="kaboom"):
        check(write_policy(SYNTHETIC_POLICY), synthetic, teacher_scores="t", student_scores="s")
    assert not issubclass(RuntimeError, FairgateError)


def test_mlflow_needs_out(synthetic, write_policy) -> None:
    with pytest.raises(UsageError, match="give out="):
        check(write_policy(SYNTHETIC_POLICY), synthetic, teacher_scores="t",
              student_scores="s", mlflow=True)


def test_load_policy_returns_the_validated_policy(write_policy) -> None:
    loaded = load_policy(write_policy(SYNTHETIC_POLICY))
    assert [c.id for c in loaded.policy.checks] == ["dp", "acc"]
    assert loaded.policy.statistics.resamples == 200


def test_a_loaded_policy_can_be_passed(synthetic, write_policy) -> None:
    path = write_policy(SYNTHETIC_POLICY)
    a = check(load_policy(path), synthetic, teacher_scores="t", student_scores="s")
    b = check(str(path), synthetic, teacher_scores="t", student_scores="s")
    same(via_api(a), via_api(b))


# ----------------------------------------------------------------------------- compare


def test_compare_twin(run_cli, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    cli = run_cli("compare", "--policy", ADULT, "--data", EXAMPLE / "audit.parquet",
                  "--teacher", EXAMPLE / "teacher.onnx", "--candidate", STUDENT,
                  "--candidate", EXAMPLE / "student_int8.onnx", "--no-mlflow", "--out", out)
    capsys.readouterr()
    frame = pd.read_parquet(EXAMPLE / "audit.parquet")
    result = compare(ADULT, frame, teacher=(EXAMPLE / "teacher.onnx").read_bytes(),
                     candidates=[STUDENT, EXAMPLE / "student_int8.onnx"])
    assert capsys.readouterr().out == ""
    assert result.exit_code == cli.exit_code
    written = json.loads((out / "compare.json").read_text())
    from fairgate.comparison import to_dict

    got = to_dict(result)
    assert got.pop("teacher")["source"] == "in-memory teacher model (317,035 bytes)"
    assert written.pop("teacher")["source"] == str(EXAMPLE / "teacher.onnx")
    assert got == written
    for cand in result.candidates:
        same(via_api(cand.report), json.loads((out / cand.name / "report.json").read_text()),
             inputs=False)


def test_compare_writes_only_when_out_is_given(synthetic, write_policy, tmp_path,
                                               monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = compare(write_policy(LOOSE), synthetic, teacher_scores="t",
                     candidate_scores=["s", "t"])
    assert not (tmp_path / "fairgate-compare").exists()
    assert sorted(c.name for c in result.candidates) == ["s", "t"] and result.exit_code == 0
    out = tmp_path / "o"
    compare(write_policy(LOOSE), synthetic, teacher_scores="t", candidate_scores=["s"], out=out)
    assert (out / "compare.json").is_file() and (out / "s" / "report.json").is_file()


def test_compare_returns_the_ranking_fields(synthetic, write_policy, tmp_path) -> None:
    from fairgate.comparison import OBJECTIVES, Comparison

    df = pd.read_parquet(synthetic)
    df["same"] = df["t"]
    out = tmp_path / "o"
    result = compare(write_policy(LOOSE), df, teacher_scores="t",
                     candidate_scores=["s", "same"], out=out)
    assert isinstance(result, Comparison)
    written = json.loads((out / "compare.json").read_text())
    assert list(result.best) == written["best"] and result.recommended == written["recommended"]
    assert list(result.indistinguishable) == written["indistinguishable"]
    assert list(result.passing) == written["passing"] and result.verdict == written["verdict"]
    for r, c in zip(result.ranking, written["candidates"], strict=True):
        assert (r.name, r.rank, r.on_front, r.layer) == (c["name"], c["rank"], c["on_front"],
                                                          c["layer"])
        assert [c["objectives"][o.name]["standing"] for o in OBJECTIVES] == list(r.standing)
        assert list(r.indistinguishable_from) == c["indistinguishable_from"]
        # each objective's change intervals are the candidate report's own KPI intervals
        report = result.candidate(r.name).report
        accuracy = next(v for v in report.kpis if v.key.metric == "accuracy")
        interval = accuracy.delta_interval
        assert interval is not None
        (change,) = result.candidate(r.name).objectives[0].changes
        assert change[1:] == pytest.approx((interval.lo, interval.hi), abs=1e-12)
    for name in ("compare.json", "compare.md", "compare.html"):
        assert (out / name).is_file()
    for cand in result.candidates:
        assert sorted(p.name for p in (out / cand.name).iterdir()) == [
            "report.html", "report.json", "report.md"]


# ----------------------------------------------------------------------------- the package


def test_import_fairgate_stays_cheap() -> None:
    code = ("import sys, fairgate; heavy = [m for m in ('pandas', 'pyarrow', 'numpy', "
            "'onnxruntime', 'fairgate.api', 'click') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "[]"
    assert fairgate.check is check and fairgate.compare is compare


def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    start = section.index(title)
    block = section[start:]
    code = block[block.index("```python\n") + len("```python\n"):]
    return code[:code.index("```")]


def test_readme_notebook_example_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(_readme_block("In a notebook"), "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report.verdict in ("pass", "warn", "fail")
    assert "verdict" in capsys.readouterr().out  # the snippet's own prints


def test_readme_pipeline_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(_readme_block("In a pipeline task"), "README.md", "exec"), namespace)
    out = tmp_path / "gate"
    with pytest.raises(RuntimeError, match="fairness gate failed"):  # the distilled student
        namespace["fairness_gate"]("examples/adult/audit.parquet",
                                   "examples/adult/student_distilled_T4.onnx", str(out))
    assert (out / "report.json").is_file()
