"""action.yml run the way the Actions runner runs it, the CI examples, and the Dockerfile.

The runner runs each `run:` step of a composite action as
``bash --noprofile --norc -eo pipefail SCRIPT`` with the step's `env:` expressions
evaluated, its own GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files, and stops at the first
failing step; the action's outputs are then evaluated from the steps' outputs. That is
simulated here against the synthetic audit set. The actions/setup-python step is skipped,
and the install step is exercised with a stand-in `python` that records what it was asked
to install, so no test reinstalls anything from PyPI.

The Dockerfile cannot be built here (no Docker engine): its structure and build context are
checked, and its install commands can be run in a fresh virtual environment with
FAIRGATE_TEST_DOCKERFILE_INSTALL=1 (opt-in: it downloads fairgate's dependencies and takes
minutes).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SYNTHETIC_POLICY
from tests.test_github import parse_file_command

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
CI = ROOT / "examples" / "ci"
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
BIN = str(Path(sys.executable).parent)  # this interpreter's python and fairgate


@dataclass
class StepRun:
    name: str
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str


@dataclass
class ActionRun:
    steps: list[StepRun]
    outputs: dict[str, str]

    @property
    def returncode(self) -> int:
        return self.steps[-1].returncode


def _evaluate(expr: str, ctx: dict[str, Any]) -> str:
    head, _, rest = expr.partition(".")
    if head == "inputs":
        return ctx["inputs"][rest]
    if head == "github":
        return ctx["github"][rest]
    if head == "steps":
        step, _, output = rest.partition(".outputs.")
        return ctx["steps"].get(step, {}).get(output, "")
    raise AssertionError(f"the simulator does not know the expression {expr!r}")


def _substitute(text: str, ctx: dict[str, Any]) -> str:
    return EXPR.sub(lambda m: _evaluate(m.group(1), ctx), text)


def run_action(inputs: dict[str, str], workspace: Path, path: str = "",
               env: dict[str, str] | None = None, steps_to_run: int = 99,
               action_path: Path = ROOT) -> ActionRun:
    declared = ACTION["inputs"]
    assert set(inputs) <= set(declared), set(inputs) - set(declared)
    for name, spec in declared.items():
        assert name in inputs or not spec.get("required"), f"input {name} is required"
    values = {k: str(inputs.get(k, spec.get("default", ""))) for k, spec in declared.items()}
    ctx: dict[str, Any] = {"inputs": values, "steps": {},
                           "github": {"action_path": str(action_path), "workspace": str(workspace)}}
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "MLFLOW_", "FAIRGATE_"))}
    base.update({"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace),
                 "PATH": path or f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})})
    steps = []
    for i, step in enumerate(ACTION["runs"]["steps"]):
        if len(steps) == steps_to_run:
            break
        if "uses" in step:
            assert step["uses"].startswith("actions/setup-python@")
            continue
        assert "if" not in step and step["shell"] == "bash"
        files = Path(tempfile.mkdtemp(prefix=f"runner-step-{i}-", dir=workspace))
        output, summary, script = files / "output", files / "summary", files / "script.sh"
        output.touch()
        summary.touch()
        script.write_text(_substitute(step["run"], ctx))
        step_env = {**base, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
                    **{k: _substitute(str(v), ctx) for k, v in step.get("env", {}).items()}}
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                              cwd=workspace, env=step_env, capture_output=True, text=True,
                              timeout=300, check=False)
        outs = parse_file_command(output.read_text())
        steps.append(StepRun(step["name"], proc.returncode, proc.stdout, proc.stderr, outs,
                             summary.read_text(encoding="utf-8")))
        if "id" in step:
            ctx["steps"][step["id"]] = outs
        if proc.returncode != 0:
            break
    outputs = {k: _substitute(v["value"], ctx) for k, v in ACTION["outputs"].items()}
    return ActionRun(steps, outputs)


@pytest.fixture
def workspace(tmp_path: Path, synthetic: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(SYNTHETIC_POLICY)
    return tmp_path


SCORES = {"policy": "policy.yaml", "data": "audit.parquet", "teacher-scores": "t",
          "student-scores": "s", "install": "false"}


# ----------------------------------------------------------------------------- action.yml


def test_run_scripts_never_paste_inputs_into_shell_code() -> None:
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step["name"]


def test_action_runs_the_gate_and_sets_outputs(workspace: Path) -> None:
    # a file name that would run commands if an input were pasted into the script
    name = "policy $(touch pwned) `touch pwned2`;.yaml"
    (workspace / name).write_text(SYNTHETIC_POLICY)
    run = run_action({**SCORES, "policy": name}, workspace)
    assert not any((workspace / f).exists() for f in ("pwned", "pwned2"))
    install, gate = run.steps
    assert install.returncode == 0 and install.stdout.startswith("fairgate, version ")
    report = json.loads((workspace / "fairgate-report" / "report.json").read_text())
    assert report["inputs"]["policy"]["path"] == name
    assert gate.returncode == report["exit_code"] == {"pass": 0, "warn": 0, "fail": 1}[
        report["verdict"]]
    failed = [f"{r['check']} [{'*'.join(r['grouping']) or 'overall'}]"
              for r in report["results"] if r["blocking"]]
    unsure = [f"{r['check']} [{'*'.join(r['grouping']) or 'overall'}]"
              for r in report["results"] if r["status"] == "inconclusive"]
    assert run.outputs == {"verdict": report["verdict"], "report-dir": "fairgate-report",
                           "failed-checks": "\n".join(failed),
                           "inconclusive-checks": "\n".join(unsure),
                           "exit-code": str(report["exit_code"]),
                           "mlflow-run-id": "", "promoted": "",  # mlflow: auto, no server
                           **{k: "" for k in COMPARE_OUTPUTS}}
    md = (workspace / "fairgate-report" / "report.md").read_text(encoding="utf-8")
    assert gate.summary == md
    annotations = [line for line in gate.stdout.splitlines() if line.startswith("::error ")]
    assert len(annotations) == min(len(failed), 10)
    assert all(a.startswith("::error file=policy $(touch pwned) `touch pwned2`;.yaml,line=")
               for a in annotations)
    assert not (workspace / "mlflow.db").exists()  # mlflow: auto, and no tracking URI


def test_action_passes_and_forwards_extra_args(workspace: Path) -> None:
    (workspace / "lenient.yaml").write_text(
        SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 1.0")
        .replace("max_decrease: 0.05", "max_decrease: 1.0"))
    run = run_action({**SCORES, "policy": "lenient.yaml", "out": "reports dir",
                      "args": "--seed 7  --format md"}, workspace)
    assert run.returncode == 0, run.steps[-1].stderr
    assert run.outputs["verdict"] == "pass" and run.outputs["failed-checks"] == ""
    out = workspace / "reports dir"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["statistics"]["seed"] == 7


def test_broken_gate_is_an_error_not_a_failure(workspace: Path) -> None:
    (workspace / "bad.yaml").write_text("version: 1\naudit: {label: y}\n")
    run = run_action({**SCORES, "policy": "bad.yaml"}, workspace)
    assert run.returncode == 2
    assert run.outputs["verdict"] == "error" and run.outputs["exit-code"] == "2"
    assert "bad.yaml:2: audit.positive_label: required key is missing" in run.steps[-1].stderr
    assert "::error title=fairgate::the gate itself broke (exit 2" in run.steps[-1].stdout
    assert run.steps[-1].summary.startswith("## ⛔ fairgate: the gate itself broke (exit 2)")


def test_action_forwards_model_uris_and_promote(workspace: Path) -> None:
    uris = {"policy": "policy.yaml", "data": "audit.parquet", "teacher": "models:/credit@champion",
            "student": "models:/credit/7", "install": "false"}
    run = run_action({**uris, "promote": "champion", "mlflow": "false"}, workspace)
    assert run.returncode == 2 and run.outputs["verdict"] == "error"
    assert ("--promote moves an MLflow registry alias, which needs the run logged to MLflow: "
            "drop --no-mlflow") in run.steps[-1].stderr
    run = run_action({**uris, "mlflow": "false"}, workspace)  # URIs reach fairgate as given
    assert run.returncode == 3 and run.outputs["exit-code"] == "3"
    assert ("teacher model models:/credit@champion: no MLflow tracking server is set"
            in run.steps[-1].stderr)
    assert not (workspace / "mlflow.db").exists()


COMPARE_OUTPUTS = ("recommended", "best-candidates", "indistinguishable-candidates",
                   "passing-candidates", "failing-candidates", "best-per-objective")


def test_action_runs_compare_when_candidates_are_given(workspace: Path) -> None:
    # candidate files whose names would run commands if pasted into the script, one a line
    # with blank lines and stray spaces around them
    example = ROOT / "examples" / "adult"
    names = ["int8 $(touch pwned).onnx", "pruned `touch pwned2`;.onnx"]
    for name, src in zip(names, ("student_int8.onnx", "student_pruned.onnx"), strict=True):
        (workspace / name).write_bytes((example / src).read_bytes())
    run = run_action({"policy": str(example / "policy.yaml"),
                      "data": str(example / "audit.parquet"),
                      "teacher": str(example / "teacher.onnx"),
                      "candidates": f"\n  {names[0]}  \n\n{names[1]}\r\n", "mlflow": "false",
                      "install": "false", "out": "cmp"}, workspace)
    assert not any((workspace / f).exists() for f in ("pwned", "pwned2"))
    out = workspace / "cmp"
    result = json.loads((out / "compare.json").read_text())
    assert sorted(c["source"] for c in result["candidates"]) == sorted(names)
    gate = run.steps[-1]
    assert gate.returncode == result["exit_code"], gate.stderr
    for c in result["candidates"]:
        assert {p.name for p in (out / c["name"]).iterdir()} == {
            "report.json", "report.md", "report.html"}
    assert {"compare.json", "compare.md", "compare.html"} <= {p.name for p in out.iterdir()}
    failed = [f"{c['name']}: {x['check']} [{'*'.join(x['grouping']) or 'overall'}]"
              for c in result["candidates"]
              for x in json.loads((out / c["name"] / "report.json").read_text())["results"]
              if x["blocking"]]
    assert run.outputs["verdict"] == result["verdict"]
    assert run.outputs["exit-code"] == str(result["exit_code"])
    assert run.outputs["report-dir"] == "cmp"
    assert run.outputs["failed-checks"] == "\n".join(failed)
    assert run.outputs["recommended"] == (result["recommended"] or "")
    assert run.outputs["best-candidates"] == "\n".join(result["best"])
    assert run.outputs["passing-candidates"] == "\n".join(result["passing"])
    assert run.outputs["indistinguishable-candidates"] == "\n".join(result["indistinguishable"])
    assert run.outputs["failing-candidates"] == "\n".join(
        c["name"] for c in result["candidates"] if c["exit_code"] != 0)
    assert gate.summary == (out / "compare.md").read_text(encoding="utf-8")
    errors = [line for line in gate.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) == min(len(failed) + (result["exit_code"] == 1), 10)


def test_action_compares_score_columns(workspace: Path) -> None:
    run = run_action({"policy": "policy.yaml", "data": "audit.parquet", "teacher-scores": "t",
                      "candidate-scores": "s\nt", "install": "false"}, workspace)
    result = json.loads((workspace / "fairgate-report" / "compare.json").read_text())
    assert [c["source"] for c in sorted(result["candidates"], key=lambda c: c["name"])] == [
        "s", "t"]
    assert run.returncode == result["exit_code"] == 0  # t, the teacher itself, passes
    assert run.outputs["verdict"] == result["verdict"]
    assert set(COMPARE_OUTPUTS) <= run.outputs.keys()


@pytest.mark.parametrize("extra", [{"student": "s.onnx"}, {"student-scores": "s"},
                                   {"promote": "champion"}])
def test_compare_refuses_check_only_inputs(workspace: Path, extra: dict[str, str]) -> None:
    run = run_action({"policy": "policy.yaml", "data": "audit.parquet", "teacher-scores": "t",
                      "candidate-scores": "s", "install": "false", **extra}, workspace)
    assert run.returncode == 2
    assert run.outputs["verdict"] == "error" and run.outputs["exit-code"] == "2"
    assert ("::error title=fairgate::candidates runs fairgate compare: give no student"
            in run.steps[-1].stdout)
    assert not (workspace / "fairgate-report").exists()


def test_extra_args_are_data_not_shell_code(workspace: Path) -> None:
    run = run_action({**SCORES, "args": "--seed $(touch pwned)"}, workspace)
    assert run.returncode == 2  # '$(touch' is not an integer: a usage error, not a command
    assert "Invalid value for '--seed'" in run.steps[-1].stderr
    assert not (workspace / "pwned").exists()


def _recording_python(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose `python` records its arguments (and whose fairgate is the real one)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "python-calls"
    (shim / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n')
    (shim / "python").chmod(0o755)
    (shim / "fairgate").symlink_to(Path(BIN) / "fairgate")
    return f"{shim}{os.pathsep}/usr/bin{os.pathsep}/bin", log


@pytest.mark.parametrize(("version", "expected"), [
    ("", f"-m pip install --disable-pip-version-check {ROOT}[text,image]"),
    ("0.1.0", "-m pip install --disable-pip-version-check fairgate[text,image]==0.1.0"),
])
def test_install_step_installs_the_action_source_or_a_version(
    workspace: Path, tmp_path: Path, version: str, expected: str
) -> None:
    path, log = _recording_python(tmp_path)
    run = run_action({**SCORES, "install": "true", "version": version}, workspace, path=path,
                     steps_to_run=1)
    assert run.returncode == 0, run.steps[0].stderr
    assert log.read_text().splitlines() == [expected]


def test_install_step_of_a_local_action_installs_its_folder(workspace: Path, tmp_path: Path) -> None:
    """`uses: ./tools/fair gate` after actions/checkout: the runner sets github.action_path to
    that folder of the checkout, and the gate is installed from it (a space stays one word)."""
    local = workspace / "tools" / "fair gate"
    local.mkdir(parents=True)
    path, log = _recording_python(tmp_path)
    run = run_action({**SCORES, "install": "true"}, workspace, path=path, steps_to_run=1,
                     action_path=local)
    assert run.returncode == 0, run.steps[0].stderr
    assert log.read_text().splitlines() == [
        f"-m pip install --disable-pip-version-check {local}[text,image]"]


def test_install_false_needs_fairgate_on_path(workspace: Path) -> None:
    run = run_action(SCORES, workspace, path=f"/usr/bin{os.pathsep}/bin")
    assert len(run.steps) == 1 and run.returncode == 1
    assert "::error title=fairgate::install is false but no fairgate is on PATH" in run.steps[0].stdout
    assert run.outputs["verdict"] == ""


def test_install_input_is_validated(workspace: Path) -> None:
    run = run_action({**SCORES, "install": "yes"}, workspace, steps_to_run=1)
    assert run.returncode == 1 and "input install must be true or false, got 'yes'" in (
        run.steps[0].stdout)


# ----------------------------------------------------------------------------- examples/ci


def test_github_workflow_uses_the_action_and_uploads_reports() -> None:
    wf = yaml.safe_load((CI / "github-workflow.yml").read_text())
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    gate = next(s for s in steps if s.get("id") == "fairgate")
    assert gate["with"].keys() <= ACTION["inputs"].keys()
    assert {k for k, v in ACTION["inputs"].items() if v.get("required")} <= gate["with"].keys()
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "${{ always() }}"
    assert upload["with"]["path"] == "${{ steps.fairgate.outputs.report-dir }}"
    assert gate["uses"] == f"{_declared_repository()}@v0.1.0"


def _declared_repository() -> str:
    """owner/name of the repository pyproject.toml declares (what `uses:` must name)."""
    import tomllib

    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert url.startswith("https://github.com/"), url
    return url.removeprefix("https://github.com/")


def test_readme_and_workflows_name_the_declared_repository() -> None:
    """Copyable as is: every `uses:` of fairgate in the README and examples/ci names the
    repository pyproject.toml declares (no OWNER placeholder), or is a local ./ action."""
    repo = _declared_repository()
    texts = {p.name: p.read_text() for p in [ROOT / "README.md", *sorted(CI.glob("*.yml"))]}
    uses = [(n, u) for n, t in texts.items() for u in re.findall(r"uses:\s*(\S+)", t)
            if "fairgate" in u]
    assert uses and all(u.startswith((f"{repo}@", "./")) for _, u in uses), uses
    assert not any("OWNER" in t for t in texts.values())


def test_compare_workflow_uses_the_action_and_reads_outputs_safely() -> None:
    wf = yaml.safe_load((CI / "github-compare.yml").read_text())
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    gate = next(s for s in steps if s.get("id") == "fairgate")
    assert gate["with"].keys() <= ACTION["inputs"].keys()
    assert "student" not in gate["with"] and gate["with"]["candidates"].count(".onnx") == 3
    said = steps[-1]
    assert "${{" not in said["run"]  # outputs reach the script as environment variables
    for value in said["env"].values():
        name = EXPR.fullmatch(value).group(1).removeprefix("steps.fairgate.outputs.")
        assert name in ACTION["outputs"], name


def test_registry_release_workflow_promotes_on_pass_only() -> None:
    text = (CI / "github-release-from-registry.yml").read_text()
    wf = yaml.safe_load(text)
    (job,) = wf["jobs"].values()
    gate = next(s for s in job["steps"] if s.get("id") == "fairgate")
    assert gate["with"].keys() <= ACTION["inputs"].keys()
    assert gate["with"]["teacher"] == "models:/credit@champion"
    assert gate["with"]["student"] == "models:/credit/${{ inputs.version }}"
    assert gate["with"]["promote"] == "champion" and gate["with"]["mlflow"] == "true"
    assert job["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
    said = job["steps"][-1]
    assert "${{" not in said["run"]  # outputs reach the script as environment variables
    assert said["env"]["PROMOTED"] == "${{ steps.fairgate.outputs.promoted }}"
    assert {"promoted", "mlflow-run-id"} <= ACTION["outputs"].keys()


def test_registry_jenkinsfile_promotes_on_pass_only() -> None:
    text = (CI / "Jenkinsfile.registry").read_text()
    assert "--promote champion" in text and "--no-mlflow" not in text
    assert '--student "models:/credit/$MODEL_VERSION"' in text
    assert re.search(r"params.MODEL_VERSION ==~ /\\d\+/", text)  # validated before the shell
    broke = re.search(r"if \(code >= 2\) \{\s*error\(", text)
    failed = re.search(r"if \(code == 1\) \{[^}]*?error\(", text)
    assert broke and failed and broke.start() < failed.start()
    assert text.count("{") == text.count("}") and text.count("(") == text.count(")")


def test_gitlab_job_publishes_the_junit_report() -> None:
    ci = yaml.safe_load((CI / ".gitlab-ci.yml").read_text())
    job = ci["fairgate"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "fairgate-report/junit.xml"
    assert any("fairgate check" in line for line in job["script"])


def test_jenkinsfile_maps_exit_codes() -> None:
    text = (CI / "Jenkinsfile").read_text()
    assert "returnStatus: true" in text and "archiveArtifacts" in text
    assert re.search(r'junit testResults: "\$\{env.OUT\}/junit.xml"', text)
    broke = re.search(r"if \(code >= 2\) \{\s*error\(\"fairgate: the gate itself broke", text)
    failed = re.search(r"if \(code == 1\) \{[^}]*?error\(\"fairgate: the student FAILED", text)
    warned = re.search(r"if \(verdict == 'warn'\) \{[^}]*?unstable\(", text)
    assert broke and failed and warned
    assert broke.start() < failed.start() < warned.start()
    assert text.count("{") == text.count("}") and text.count("(") == text.count(")")


# ----------------------------------------------------------------------------- Dockerfile


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = rel.split("/")
    ignored = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.strip("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pat.startswith("**/"):
            tail = pat[3:]
            hit = any(fnmatch.fnmatchcase(p, tail) for p in parts)
        else:
            hit = any(fnmatch.fnmatchcase(c, pat) and c.count("/") == pat.count("/")
                      for c in candidates)
        if hit:
            ignored = not neg
    return ignored


def build_context() -> list[str]:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return sorted(f for f in files if (ROOT / f).is_file() and not _ignored(f, patterns))


def test_dockerfile_shape() -> None:
    ins = _instructions(ROOT / "Dockerfile")
    names = [n for n, _ in ins]
    assert ins[0] == ("FROM", "python:3.11-slim")
    user = next(a for n, a in ins if n == "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert names.index("USER") < names.index("ENTRYPOINT")
    assert ("WORKDIR", "/work") in ins
    assert json.loads(next(a for n, a in ins if n == "ENTRYPOINT")) == ["fairgate"]
    runs = [a for n, a in ins if n == "RUN"]
    # with the text and image extras: the image gates tokenizer and Pillow models too
    assert any('pip install "/src[text,image]"' in r for r in runs)
    assert ("COPY", ". /src") in ins


def test_docker_build_context_is_the_package_only() -> None:
    context = build_context()
    assert "pyproject.toml" in context and "fairgate/cli.py" in context
    assert "fairgate/report/html.py" in context and "README.md" in context
    # fairgate/policies links to policies/: the ready policies fairgate init lists
    assert {f"policies/{p.name}" for p in (ROOT / "policies").glob("*.yaml")} <= set(context)
    assert not [f for f in context if f.startswith(("tests/", "examples/", ".git", "benchmarks/"))]
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]
    assert _ignored("fairgate/__pycache__/cli.cpython-311.pyc", ["*", "!fairgate", "**/__pycache__"])
    assert not _ignored("fairgate/report/json.py", ["*", "!fairgate", "**/__pycache__"])


def _dockerfile_install_in_a_fresh_venv(tmp_path: Path, synthetic: Path) -> None:
    src = tmp_path / "src"
    for rel in build_context():  # what COPY . /src copies
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes((ROOT / rel).read_bytes())
    venv = tmp_path / "venv"
    install = next(a for n, a in _instructions(ROOT / "Dockerfile") if n == "RUN" and "pip" in a)
    script = (install.replace("/opt/fairgate", str(venv)).replace("/src", str(src))
              .replace("python -m venv", f"{sys.executable} -m venv", 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update({"PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
                "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fairgate, version" in proc.stdout
    assert not src.exists()  # the Dockerfile cleans up its sources
    (tmp_path / "policy.yaml").write_text(SYNTHETIC_POLICY)
    gate = subprocess.run([str(venv / "bin" / "fairgate"), "check", "--policy", "policy.yaml",
                           "--data", str(synthetic), "--teacher-scores", "t", "--student-scores",
                           "s", "--no-mlflow"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert gate.returncode in (0, 1), gate.stderr
    assert (tmp_path / "fairgate-report" / "report.html").exists()


# Opt-in, and then collected as a test (not a skipped one): it downloads fairgate's
# dependencies into a fresh virtual environment and takes minutes.
if os.environ.get("FAIRGATE_TEST_DOCKERFILE_INSTALL") == "1":
    test_dockerfile_install_commands_work_in_a_fresh_venv = _dockerfile_install_in_a_fresh_venv


def test_action_passes_a_reference_student_for_multiclass_gates(tmp_path: Path) -> None:
    mc = ROOT / "examples" / "adult_multiclass"
    run = run_action({"policy": str(mc / "policy.yaml"), "data": str(mc / "audit.parquet"),
                      "teacher": str(mc / "teacher.onnx"),
                      "student": str(mc / "student_distilled_T4.onnx"),
                      "reference-student": str(mc / "student_nds.onnx"), "mlflow": "false",
                      "install": "false"}, tmp_path)
    report = json.loads((tmp_path / "fairgate-report" / "report.json").read_text())
    assert run.steps[-1].returncode == report["exit_code"] == 1
    assert report["inputs"]["reference_student"]["path"] == str(mc / "student_nds.onnx")
    assert "reference_vs_student" in report["classwise"]
