"""``fairgate init``: a starter policy proposed from the audit set and the models.

Every written policy is loaded back through the policy loader and gated with ``fairgate
check``. Oracles: group sizes counted with pandas, quartiles from numpy, and the agreement
of each output column with the label computed here with onnxruntime on the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper

from fairgate.policy import load_policy
from fairgate.policy.starter import policies_dir, ready_policies
from tests.conftest import EXAMPLE

TEACHER, STUDENT = EXAMPLE / "teacher.onnx", EXAMPLE / "student_int8.onnx"
AUDIT = EXAMPLE / "audit.parquet"


def test_init_on_adult_writes_a_policy_check_runs_with(run_cli, tmp_path) -> None:
    out = tmp_path / "policy.yaml"
    r = run_cli("init", "--data", AUDIT, "--positive", ">50K", "--teacher", TEACHER,
                "--student", STUDENT, "--out", out)
    assert r.exit_code == 0, r.stderr
    policy = load_policy(out).policy
    assert policy.audit.label == "income" and policy.audit.positive_label == ">50K"
    assert {"sex", "race", "age"} <= set(policy.audit.attributes)
    assert "age" in policy.audit.binned and policy.model.positive_column == 1
    # the agreement figures, against onnxruntime run here on the same rows
    df = pd.read_parquet(AUDIT)
    session = ort.InferenceSession(str(TEACHER), providers=["CPUExecutionProvider"])
    feeds = {i.name: (df[[i.name]].to_numpy(np.float32) if i.type == "tensor(float)"
                      else df[[i.name]].to_numpy(object)) for i in session.get_inputs()}
    proba = session.run(["probabilities"], feeds)[0]
    y = (df.income == ">50K").to_numpy()
    a1, a0 = np.mean((proba[:, 1] >= 0.5) == y), np.mean((proba[:, 0] >= 0.5) == y)
    text = out.read_text()
    assert (f"teacher: on 15,060 sample rows, income == '>50K' agrees with column 1 taken as "
            f"positive on {a1:.1%} and column 0 on {a0:.1%}") in text
    # group sizes in the terminal, against pandas
    sizes = df.sex.value_counts()
    assert f"groups: Male {sizes['Male']:,}, Female {sizes['Female']:,}" in r.stdout
    gated = run_cli("check", "--policy", out, "--data", AUDIT, "--teacher", TEACHER,
                    "--student", STUDENT, "--no-mlflow", "--format", "json")
    assert gated.exit_code in (0, 1), gated.stderr


@pytest.fixture
def loans(tmp_path: Path) -> Path:
    """A CSV: label approved (yes/no), gender, age (numeric), region, scores t and s."""
    rng = np.random.default_rng(5)
    n = 4000
    df = pd.DataFrame({"gender": rng.choice(["F", "M"], n), "age": rng.integers(18, 80, n),
                       "region": rng.choice(["n", "s", "e"], n),
                       "approved": rng.choice(["yes", "no"], n)})
    yes = (df.approved == "yes").to_numpy()
    df["t"] = np.clip(yes * 0.3 + rng.random(n) * 0.7, 0, 1)
    df["s"] = np.clip(yes * 0.25 + rng.random(n) * 0.7, 0, 1)
    path = tmp_path / "loans.csv"
    df.to_csv(path, index=False)
    return path


def test_init_on_a_csv_proposes_label_positive_and_binned_age(run_cli, tmp_path, loans) -> None:
    out = tmp_path / "p.yaml"
    r = run_cli("init", "--data", loans, "--out", out)
    assert r.exit_code == 0, r.stderr
    policy = load_policy(out).policy
    audit = policy.audit
    assert audit.label == "approved" and audit.positive_label == "yes"
    assert audit.attributes == ["gender", "age"] and audit.intersections
    df = pd.read_csv(loans)
    q = np.round(np.quantile(df.age, [0.25, 0.5, 0.75]))
    assert audit.binned["age"].edges == (float("-inf"), *q, float("inf"))
    text = out.read_text()
    assert "label: approved  # proposed, review: the only two-valued column not named like a " \
           "sensitive attribute" in text
    assert "# other columns with few values, if they are sensitive here: region" in text
    labels = pd.cut(df.age, list(audit.binned["age"].edges), right=False)
    counts = labels.value_counts().sort_index()
    shown = ", ".join(f'"[{int(i.left) if np.isfinite(i.left) else "-inf"}, '
                      f'{int(i.right) if np.isfinite(i.right) else "inf"})" {n:,}'
                      for i, n in counts.items())
    assert f"# groups in the sample: {shown}" in text
    assert "# positive_column: 1" in text  # no model given: not proposed
    gated = run_cli("check", "--policy", out, "--data", loans, "--teacher-scores", "t",
                    "--student-scores", "s", "--no-mlflow", "--format", "json")
    assert gated.exit_code in (0, 1), gated.stderr
    assert {tuple(g["grouping"]) for g in gated.report["groups"]} >= {("age",), ("gender", "age")}


def test_existing_file_is_not_overwritten_without_force(run_cli, tmp_path, loans) -> None:
    out = tmp_path / "policy.yaml"
    out.write_text("mine\n")
    r = run_cli("init", "--data", loans, "--out", out)
    assert r.exit_code == 2
    assert r.stderr == f"fairgate: error: {out}: exists; add --force to overwrite it\n"
    assert out.read_text() == "mine\n"
    forced = run_cli("init", "--data", loans, "--out", out, "--force")
    assert forced.exit_code == 0 and load_policy(out).policy.audit.label == "approved"


def test_missing_label_says_did_you_mean(run_cli, tmp_path, loans) -> None:
    r = run_cli("init", "--data", loans, "--label", "aproved", "--out", tmp_path / "p.yaml")
    assert r.exit_code == 2
    assert f"--label 'aproved': no such column in {loans}; did you mean 'approved'?" in r.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_undecidable_positive_label_asks_and_writes_nothing(run_cli, tmp_path) -> None:
    out = tmp_path / "p.yaml"
    r = run_cli("init", "--data", AUDIT, "--out", out)
    assert r.exit_code == 2
    n = pd.read_parquet(AUDIT).income.value_counts()
    assert r.stderr == (f"fairgate: error: label column 'income' holds '<=50K' ({n['<=50K']:,}), "
                        f"'>50K' ({n['>50K']:,}): which is the positive (favourable) outcome is "
                        'yours to say; give --positive "<=50K" or --positive ">50K"\n')
    assert not out.exists()


def test_hostile_column_names_round_trip(run_cli, tmp_path) -> None:
    """A column name with a newline, a comment sign and quotes stays one value in the YAML."""
    name = 'sex\n# injected: true "x" #'
    df = pd.DataFrame({name: ["a", "b"] * 50, "label": [0, 1] * 50, "t": 0.5})
    data = tmp_path / "d.parquet"
    df.to_parquet(data)
    out = tmp_path / "p.yaml"
    r = run_cli("init", "--data", data, "--sensitive", name, "--out", out)
    assert r.exit_code == 0, r.stderr
    assert load_policy(out).policy.audit.attributes == [name]
    assert "\ninjected" not in out.read_text().replace("\n# injected", "")


def _unnamed(path: Path, flip: bool) -> Path:
    """An [N, 2] output from one [N, 1] score input: (p, 1 - p), or (1 - p, p)."""
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("Sub", ["one", "p"], ["q"]),
             helper.make_node("Concat", ["q", "p"] if not flip else ["p", "q"],
                              ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "g", [p], [out], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("flip", [False, True])
def test_positive_column_is_proposed_only_when_decisive(run_cli, tmp_path, flip: bool) -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    informative = np.clip(y * 0.6 + rng.random(2000) * 0.4, 0, 1)  # agrees with y
    df = pd.DataFrame({"y": y, "sex": rng.choice(["F", "M"], 2000), "p": informative})
    data = tmp_path / "d.parquet"
    df.to_parquet(data)
    model = _unnamed(tmp_path / "m.onnx", flip)
    out = tmp_path / "p.yaml"
    r = run_cli("init", "--data", data, "--teacher", model, "--student", model, "--out", out)
    assert r.exit_code == 0, r.stderr
    expected = 0 if flip else 1
    assert load_policy(out).policy.model.positive_column == expected
    agree = np.mean((informative >= 0.5) == (y == 1))
    assert f"on {agree:.1%}" in out.read_text()
    # the same model on a score that says nothing of the label: not proposed
    df["p"] = rng.random(2000)
    df.to_parquet(data)
    r = run_cli("init", "--data", data, "--teacher", model, "--out", out, "--force")
    assert r.exit_code == 0, r.stderr
    assert load_policy(out).policy.model.teacher is None
    assert "# teacher: {positive_column: 0 or 1}  # not proposed:" in out.read_text()


def test_list_shows_every_ready_policy_with_its_purpose(run_cli) -> None:
    r = run_cli("init", "--list")
    assert r.exit_code == 0
    files = sorted(policies_dir().glob("*.yaml"))
    assert [p.path.name for p in ready_policies()] == [f.name for f in files] and len(files) >= 3
    for f in files:
        first = f.read_text().splitlines()[0].lstrip("# ")
        assert first.startswith(f"{f.stem}: ")
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"{f.stem}  "))
        assert first[len(f.stem) + 2:] in line


def test_matrix_input_model_leaves_features_to_the_user(run_cli, tmp_path) -> None:
    """One [N, 2] input: the graph does not name its columns, so features are not proposed
    (commented out, with why); the policy still validates."""
    from tests.hostile.onnx_models import network

    model = network(tmp_path / "m.onnx", np.array([[1.0, -1.0], [0.5, -0.5]]))
    rng = np.random.default_rng(0)
    pd.DataFrame({"x0": rng.random(200), "x1": rng.random(200), "sex": rng.choice(["a", "b"], 200),
                  "label": rng.integers(0, 2, 200)}).to_parquet(tmp_path / "d.parquet")
    out = tmp_path / "p.yaml"
    r = run_cli("init", "--data", tmp_path / "d.parquet", "--teacher", model, "--out", out)
    assert r.exit_code == 0, r.stderr
    assert "list its columns in order under model.features" in r.stdout
    assert "  # features: [...]" in out.read_text()
    assert load_policy(out).policy.model.features is None
