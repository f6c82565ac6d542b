"""Hostile policies, special files, unwritable --out and nested columns (issue 10, sections 3-4).

Every input is built here. Each case asserts the exact message (and through the CLI the exit
code, no traceback and nothing written to --out). Special files (FIFOs, devices) run the CLI
in a child process with a timeout, so a regression fails as a timeout instead of hanging the
suite. A Hypothesis test fuzzes the policy loader and `fairgate policy validate`.
"""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fairgate.comparison
import fairgate.run
from fairgate.cli import main
from fairgate.errors import PolicyError
from fairgate.inputs.audit import AuditSet
from fairgate.policy import load_policy
from fairgate.policy.loader import MAX_BYTES
from fairgate.report import prepare_out_dir
from tests.conftest import EXAMPLE, ROOT, SYNTHETIC_POLICY

CHILD_TIMEOUT = 60  # seconds; a child that blocks on a FIFO fails the test here

BASE = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
checks:
  - id: dp
    metric: demographic_parity_difference
    max_increase: 0.02
"""


def policy_error(tmp_path: Path, text: str | bytes) -> str:
    """The PolicyError message for a policy with this content, the path shown as p.yaml."""
    path = tmp_path / "p.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    return str(e.value).replace(str(path), "p.yaml")


def scores_check(run_cli, policy: Path, data: Path, out: Path):
    return run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "t",
                   "--student-scores", "s", "--no-mlflow", "--out", out)


def bomb() -> str:
    """Billion laughs: 342 bytes whose aliases expand to 9⁹ (about 4·10⁸) values."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    return text


DEPTH = "nested deeper than 64 levels (the limit for a policy)"
MERGE = ("merge keys (<<) are not supported: they can silently override keys; write the keys "
         "out (an alias of a whole value, like `on: *groups`, is fine)")
DEEP_LIST = "x[0][0][0][0][0] … [0][0][0][0][0][0]"

# name, policy text, exact message (file shown as p.yaml)
POLICY_CASES = [
    ("alias bomb", bomb(),
     "p.yaml:4: d[4]: alias *c repeats 820 values, which takes the policy past 5,000 values "
     "(the limit for a policy); write the values out or use fewer aliases"),
    ("flow nesting 1,000", BASE + "x: " + "[" * 1000 + "]" * 1000 + "\n", f"p.yaml:10: x: {DEPTH}"),
    ("flow nesting 100,000", BASE + "x: " + "[" * 100_000 + "]" * 100_000 + "\n",
     f"p.yaml:10: x: {DEPTH}"),
    ("flow mappings 1,000", BASE + "x: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
     f"p.yaml:10: x.a.a.a.a.a … a.a.a.a.a.a: {DEPTH}"),
    ("block nesting 1,000", BASE + "x:\n  " + "- " * 1000 + "v\n", f"p.yaml:11: {DEEP_LIST}: {DEPTH}"),
    ("block nesting 100,000", BASE + "x:\n  " + "- " * 100_000 + "v\n",
     f"p.yaml:11: {DEEP_LIST}: {DEPTH}"),
    ("indented keys 100 deep", BASE + "".join(" " * i + f"k{i}:\n" for i in range(100)) + " " * 100
     + "v\n", f"p.yaml:74: k0.k1.k2.k3.k4.k5 … k58.k59.k60.k61.k62.k63: {DEPTH}"),
    ("depth through an alias", "deep: &d " + "[" * 40 + "]" * 40 + "\nx: " + "[" * 30 + "*d"
     + "]" * 30 + "\n",
     f"p.yaml:2: {DEEP_LIST}: alias *d nests the policy deeper than 64 levels (the limit for a "
     "policy)"),
    ("recursive alias", "a: &a [1, *a]\n",
     "p.yaml:1: a[1]: alias *a is used inside the value it names (a recursive structure)"),
    ("too many values", BASE + "x: [" + ",".join(["1"] * 6000) + "]\n",
     "p.yaml:10: x[4976]: the policy holds more than 5,000 values (keys, items and scalars; the "
     "limit for a policy)"),
    ("merge key", BASE.replace("checks:\n", "defaults: &defaults {severity: warn}\nchecks:\n")
     .replace("  - id: dp\n", "  - <<: *defaults\n    id: dp\n"), f"p.yaml:8: checks[0].<<: {MERGE}"),
    ("multi-merge overriding severity",
     BASE.replace("checks:\n", "a: &a {severity: fail}\nb: &b {severity: warn}\nchecks:\n")
     .replace("  - id: dp\n", "  - <<: [*a, *b]\n    id: dp\n"), f"p.yaml:9: checks[0].<<: {MERGE}"),
    ("merge key written as a tag", BASE + "x: {!!merge a: 1}\n", f"p.yaml:10: x.<<: {MERGE}"),
    ("impossible date", BASE + "waivers:\n  - check: dp\n    reason: r\n    owner: me\n"
     "    expires: 2030-02-30\n",
     "p.yaml:14: waivers[0].expires: cannot read '2030-02-30' as timestamp: day is out of range "
     "for month"),
    ("tagged int", BASE.replace("max_increase: 0.02", "max_increase: !!int abc"),
     "p.yaml:9: checks[0].max_increase: cannot read 'abc' as int: invalid literal for int() with "
     "base 10: 'abc'"),
    ("tagged bool", BASE + "x: !!bool maybe\n",
     "p.yaml:10: x: cannot read 'maybe' as bool: not a value of that type"),
    ("5,000-digit number", BASE.replace("0.02", "9" * 5000),
     "p.yaml:9: checks[0].max_increase: cannot read '" + "9" * 59 + "…' as int: Exceeds the limit "
     "(4300 digits) for integer string conversi…"),
    ("NUL character", BASE + "x: a\x00b\n",
     "p.yaml:10: not valid YAML: character U+0000 is not allowed in YAML"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in POLICY_CASES],
                         ids=[c[0] for c in POLICY_CASES])
def test_hostile_policy_is_refused_fast_in_little_memory(tmp_path: Path, text: str,
                                                         message: str) -> None:
    tracemalloc.start()
    cpu = time.process_time()
    try:
        got = policy_error(tmp_path, text)
        seconds = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == message
    # unbounded, these took 5 s (a 10 MB policy) to 40 s (the alias bomb); refused, at most
    # 0.75 s of CPU under tracemalloc: 3 s leaves room for a loaded CI machine
    assert seconds < 3.0
    assert peak < 32 << 20  # the bomb expanded would take gigabytes


def test_nesting_within_the_limit_is_parsed(tmp_path: Path) -> None:
    """63 levels of flow and of block nesting reach validation (which names the unknown key)."""
    flow = "x: " + "[" * 62 + "]" * 62 + "\n"
    block = "x:\n  " + "- " * 62 + "v\n"
    for extra in (flow, block):
        assert policy_error(tmp_path, BASE + extra).startswith("p.yaml:10: x: unknown key 'x'")


def test_aliases_of_whole_values_stay_allowed(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace("sensitive: [sex, race]", "sensitive: &attrs [sex, race]")
                    + "    on: *attrs\n  - id: acc\n    metric: accuracy\n    max_decrease: 0.1\n")
    policy = load_policy(path).policy
    assert policy.checks[0].on == ["sex", "race"]


def test_ten_megabyte_policy_is_refused_after_reading_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "# " + "x" * (10 << 20) + "\n")
    tracemalloc.start()
    cpu = time.process_time()
    try:
        with pytest.raises(PolicyError) as e:
            load_policy(path)
        seconds = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value) == f"{path}: larger than 256 KiB, the limit for a policy file"
    assert seconds < 1.0
    assert peak < 4 * MAX_BYTES  # never the whole 10 MB


def test_policy_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = BASE + "#" * (MAX_BYTES - len(BASE) - 1) + "\n"
    assert len(text.encode()) == MAX_BYTES
    path.write_text(text)
    assert load_policy(path).policy.checks[0].id == "dp"
    path.write_text(text + "\n")
    with pytest.raises(PolicyError, match="larger than 256 KiB"):
        load_policy(path)


def test_byte_order_marks_and_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(codecs.BOM_UTF8 + BASE.encode())
    loaded = load_policy(path)
    assert loaded.policy.audit.label == "y" and loaded.text == BASE
    assert policy_error(tmp_path, BASE.encode("utf-16")) == (
        "p.yaml: the policy is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    assert policy_error(tmp_path, BASE.encode("utf-32")) == (
        "p.yaml: the policy is UTF-32 (it starts with a UTF-32 byte-order mark); save it as UTF-8")
    latin1 = BASE.replace("label: y", "label: y\xe9").encode("latin-1")
    assert policy_error(tmp_path, latin1) == (
        "p.yaml:3: not UTF-8 (byte 0xe9 at byte 11 of the line); save the policy as UTF-8")


def test_many_problems_are_counted_beyond_the_first_hundred(tmp_path: Path) -> None:
    text = BASE + "".join(f"  - {{id: c{i}, metric: nope{i}, max: 1}}\n" for i in range(150))
    lines = policy_error(tmp_path, text).splitlines()
    assert lines[0] == "150 problems in the policy:"
    assert len(lines) == 1 + 100 + 1 and lines[-1] == "  … and 50 more"


CHECK_CASES = {  # policy text or bytes -> message after the path
    "alias bomb": (bomb(), ":4: d[4]: alias *c repeats 820 values, which takes the policy past "
                   "5,000 values (the limit for a policy); write the values out or use fewer aliases"),
    "deep nesting": (BASE + "x: " + "[" * 100_000 + "]" * 100_000 + "\n", f":10: x: {DEPTH}"),
    "10 MB": (BASE + "#" * (10 << 20) + "\n", ": larger than 256 KiB, the limit for a policy file"),
    "multi-merge": ({c[0]: c[1] for c in POLICY_CASES}["multi-merge overriding severity"],
                    f":9: checks[0].<<: {MERGE}"),
    "UTF-16": (BASE.encode("utf-16"), ": the policy is UTF-16 (it starts with a UTF-16 byte-order "
               "mark); save it as UTF-8"),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_with_a_hostile_policy_exits_2_and_writes_nothing(
        case: str, synthetic: Path, run_cli, tmp_path: Path) -> None:
    text, message = CHECK_CASES[case]
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    r = scores_check(run_cli, policy, synthetic, out)
    assert r.exit_code == 2, r.stderr
    assert r.stderr == f"fairgate: error: {policy}{message}\n"
    assert not out.exists()


def test_policy_validate_command_refuses_a_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    r = CliRunner().invoke(main, ["policy", "validate", str(path)], catch_exceptions=False)
    assert r.exit_code == 2
    assert r.stderr == (f"fairgate: error: {path}:4: d[4]: alias *c repeats 820 values, which "
                        "takes the policy past 5,000 values (the limit for a policy); write the "
                        "values out or use fewer aliases\n")


# ----------------------------------------------------------------------------- special files


def fairgate_child(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m fairgate ARGS` in a child process that is killed after CHILD_TIMEOUT."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "fairgate", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)


@pytest.fixture
def gate_inputs(tmp_path: Path) -> dict[str, Path]:
    """The example gate (its models load, so a bad --data is reached), and a FIFO."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"policy": EXAMPLE / "policy.yaml", "data": EXAMPLE / "audit.parquet", "fifo": fifo,
            "onnx": EXAMPLE / "teacher.onnx"}


SPECIAL = {"fifo": "a FIFO", "/dev/zero": "a character device", "/dev/null": "a character device"}
ROLES = {  # option -> exit code, message prefix, what was expected
    "--policy": (2, "", "a YAML policy file"),
    "--data": (3, "", "a .parquet, .orc or .csv file, or a directory or glob of them"),
    "--teacher": (3, "teacher model ", "an .onnx file"),
}


@pytest.mark.parametrize("special", list(SPECIAL))
@pytest.mark.parametrize("option", list(ROLES))
def test_special_file_is_not_a_regular_file(gate_inputs: dict[str, Path], tmp_path: Path,
                                            special: str, option: str) -> None:
    path = gate_inputs["fifo"] if special == "fifo" else Path(special)
    args = {"--policy": gate_inputs["policy"], "--data": gate_inputs["data"],
            "--teacher": gate_inputs["onnx"], option: path}
    out = tmp_path / "out"
    r = fairgate_child("check", *(x for kv in args.items() for x in kv), "--student",
                       gate_inputs["onnx"], "--out", out, "--no-mlflow", cwd=tmp_path)
    code, prefix, expected = ROLES[option]
    assert r.returncode == code, r.stderr
    assert r.stderr == (f"fairgate: error: {prefix}{path}: not a regular file ({SPECIAL[special]}), "
                        f"expected {expected}\n")
    assert not out.exists()


def test_fifo_as_policy_of_policy_validate(gate_inputs: dict[str, Path], tmp_path: Path) -> None:
    r = fairgate_child("policy", "validate", gate_inputs["fifo"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == (f"fairgate: error: {gate_inputs['fifo']}: not a regular file (a FIFO), "
                        "expected a YAML policy file\n")


def test_fifo_as_candidate_of_compare(gate_inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = fairgate_child("compare", "--policy", gate_inputs["policy"], "--data", gate_inputs["data"],
                       "--teacher", gate_inputs["onnx"], "--candidate", gate_inputs["fifo"],
                       "--out", out, "--no-mlflow", cwd=tmp_path)
    assert r.returncode == 3
    assert r.stderr == (f"fairgate: error: candidate model {gate_inputs['fifo']}: not a regular "
                        "file (a FIFO), expected an .onnx file\n")
    assert not out.exists()


def test_fifo_as_external_data_of_a_model(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    weight = numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["score"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])], [weight])
    model = helper.make_model(graph)
    convert_model_to_external_data(model, location="w.bin", size_threshold=0)
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "w.bin").unlink()
    os.mkfifo(tmp_path / "w.bin")
    policy = tmp_path / "policy.yaml"
    policy.write_text(SYNTHETIC_POLICY)
    r = fairgate_child("check", "--policy", policy, "--data", tmp_path / "none.parquet",
                       "--teacher", tmp_path / "m.onnx", "--student", tmp_path / "m.onnx",
                       "--out", tmp_path / "out", "--no-mlflow", cwd=tmp_path)
    assert r.returncode == 3
    assert r.stderr == (f"fairgate: error: teacher model {tmp_path / 'm.onnx'}: external data "
                        f"'w.bin': not a regular file (a FIFO), expected a file\n")


# ----------------------------------------------------------------------------- --out


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a gate starts: --out problems must stop fairgate before any work."""
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the gate ran")

    monkeypatch.setattr(fairgate.run, "evaluate_policy", boom)
    monkeypatch.setattr(fairgate.comparison, "run_compare", boom)


def assert_usage_error(r, message: str) -> None:
    assert r.exit_code == 2, r.stderr
    assert r.stderr == f"fairgate: error: {message}\n"
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["check", "compare"])
def test_out_that_is_a_file_or_under_a_file_exits_2_before_any_work(
        command: str, synthetic: Path, write_policy, run_cli, tmp_path: Path, no_work) -> None:
    policy = write_policy(SYNTHETIC_POLICY)
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    cases = [
        (afile, f"--out {afile}: exists and is not a directory; give a directory for the reports"),
        (afile / "sub" / "dir", f"--out {afile / 'sub' / 'dir'}: {afile} is not a directory, so no "
         "directory can be made under it"),
        (Path("/dev/null"), "--out /dev/null: exists and is not a directory; give a directory for "
         "the reports"),
    ]
    for out, message in cases:
        r = run_cli(command, "--policy", policy, "--data", synthetic, "--no-mlflow", "--out", out,
                    *(("--teacher-scores", "t", "--student-scores", "s") if command == "check"
                      else ("--teacher-scores", "t", "--candidate-scores", "s")))
        assert_usage_error(r, message)
    assert afile.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "audit.parquet", "policy.yaml"]


def test_compare_candidate_folder_blocked_by_a_file(synthetic: Path, write_policy, run_cli,
                                                    tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "s").write_text("not a folder")
    monkeypatch.setattr(fairgate.comparison, "run_gate", lambda *a: pytest.fail("gated"))
    r = run_cli("compare", "--policy", write_policy(SYNTHETIC_POLICY), "--data", synthetic,
                "--teacher-scores", "t", "--candidate-scores", "s", "--no-mlflow", "--out", out)
    assert_usage_error(r, f"--out {out / 's'}: exists and is not a directory; give a directory for "
                          "the reports")
    assert sorted(p.name for p in out.iterdir()) == ["s"]


def test_out_on_a_read_only_file_system(synthetic: Path, write_policy, run_cli,
                                        no_work) -> None:
    """sysfs refuses new files and folders to every user, root included (chmod does not)."""
    sys_fs = Path("/sys")
    assert sys_fs.is_dir()
    r = scores_check(run_cli, write_policy(SYNTHETIC_POLICY), synthetic, sys_fs / "fairgate-out")
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith(f"fairgate: error: --out {sys_fs / 'fairgate-out'}: cannot create "
                               "the directory (")
    r = scores_check(run_cli, write_policy(SYNTHETIC_POLICY), synthetic, sys_fs)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith(f"fairgate: error: --out {sys_fs}: cannot write in the directory (")


def test_out_unwritable_is_found_by_the_probe(tmp_path: Path, monkeypatch) -> None:
    """What root cannot test with chmod: a directory where no file can be created."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(Exception, match=r"cannot write in the directory \(Permission denied\)$"):
        prepare_out_dir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # folders made for the probe are removed again


def test_prepare_out_dir_leaves_no_trace(tmp_path: Path) -> None:
    prepare_out_dir(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "c").mkdir()
    prepare_out_dir(tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def test_out_that_is_a_file_used_to_lose_the_verdict(synthetic: Path, write_policy, run_cli,
                                                     tmp_path: Path) -> None:
    """The end-to-end case of the issue: now exit 2 at once, not exit 4 after the gate."""
    out = tmp_path / "report"
    out.write_text("")
    r = scores_check(run_cli, write_policy(SYNTHETIC_POLICY), synthetic, out)
    assert_usage_error(r, f"--out {out}: exists and is not a directory; give a directory for the "
                          "reports")


# ----------------------------------------------------------------------------- nested columns


NESTED = {
    "list": (pa.list_(pa.string()), lambda v: [v]),
    "struct": (pa.struct([("v", pa.string())]), lambda v: {"v": v}),
    "map": (pa.map_(pa.string(), pa.string()), lambda v: [("k", v)]),
}


def nested_data(tmp_path: Path, column: str, kind: str) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    cols = {"sex": rng.choice(["F", "M"], n).tolist(), "race": rng.choice(["A", "B"], n).tolist(),
            "y": rng.integers(0, 2, n).tolist(), "t": rng.random(n), "s": rng.random(n)}
    typ, wrap = NESTED[kind]
    arrays = {k: pa.array([wrap(str(v)) for v in vals], typ) if k == column else pa.array(vals)
              for k, vals in cols.items()}
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table(arrays), path)
    return path


@pytest.fixture
def no_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a batch is read: a nested column must be refused from the schema."""
    monkeypatch.setattr(AuditSet, "_cast", lambda self, batch: pytest.fail("a batch was read"))


@pytest.mark.parametrize(("column", "role"), [("race", "a sensitive attribute"), ("y", "the label")])
@pytest.mark.parametrize("kind", list(NESTED))
def test_nested_grouping_or_label_column_exits_3(column: str, role: str, kind: str, write_policy,
                                                 run_cli, tmp_path: Path, no_batch) -> None:
    data = nested_data(tmp_path, column, kind)
    typ = pq.read_schema(data).field(column).type
    r = scores_check(run_cli, write_policy(SYNTHETIC_POLICY), data, tmp_path / "out")
    assert r.exit_code == 3, r.stderr
    assert r.stderr == (f"fairgate: error: {data}: column {column!r} ({role}) has type {typ}; it "
                        "must hold one value per row, not a list, struct, map or union\n")
    assert not (tmp_path / "out").exists()


def test_nested_spurious_attribute_exits_3(write_policy, run_cli, tmp_path: Path, no_batch) -> None:
    data = nested_data(tmp_path, "t", "list")  # scores come from s only: t is free to be nested
    policy = write_policy(SYNTHETIC_POLICY.replace(
        "  intersections: true\n", "  intersections: true\n  spurious: {attribute: t, value: a, "
        "label: 1}\n"))
    r = run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "s",
                "--student-scores", "s", "--no-mlflow", "--out", tmp_path / "out")
    assert r.exit_code == 3, r.stderr
    assert r.stderr == (f"fairgate: error: {data}: column 't' (the spurious attribute) has type "
                        "list<element: string>; it must hold one value per row, not a list, "
                        "struct, map or union\n")


# ----------------------------------------------------------------------------- fuzzing


FRAGMENTS = ["&a ", "*a", "<<: *a", "<<: [*a, *a]", "\t", "- ", "? ", ": ", "!!int ", "!!bool ",
             "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!float ", "!!str ", "!!null ",
             "!!python/object:os.system ", "!custom ", "[", "]", "{", "}", ",", "'", '"', "|\n",
             ">\n", "#", "%YAML 1.2\n", "---\n", "...\n", "\x00", "\ufeff", "\x85", "\u2028",
             "2030-02-30", "9" * 5000, "1e999", ".nan", "id: dp\nid: dp\n", "on: ", "y\xe9s",
             "{a: " * 80, "[" * 80, "- " * 80]


def policy_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                        st.sampled_from(["dp", "sex", "race", "y", "accuracy", "warn", "max",
                                         "demographic_parity_difference", "2030-01-01"]))
    keys = st.one_of(st.text(max_size=12), st.sampled_from(
        ["version", "audit", "label", "sensitive", "checks", "id", "metric", "on", "max",
         "severity", "waivers", "statistics", "resamples", "decide_on", "model", "features"]))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)), max_leaves=30)


@st.composite
def yamlish(draw: st.DrawFn) -> str | bytes:
    """Random bytes or text, or a dumped random tree or policy with YAML fragments spliced in."""
    kind = draw(st.sampled_from(["bytes", "text", "tree", "policy"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "tree":
        text = yaml.safe_dump(draw(policy_values()), allow_unicode=True)
    else:
        data = yaml.safe_load(BASE)
        key = draw(st.sampled_from(["label", "sensitive", "x", None]))
        if key is not None:
            data["audit"][key] = draw(policy_values())
        text = yaml.safe_dump(data, allow_unicode=True, default_flow_style=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(FRAGMENTS)) + text[at:]
    return text


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=yamlish())
def test_fuzz_policy_is_valid_or_a_policy_error(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        cpu = time.process_time()
        try:
            load_policy(path)
        except PolicyError as e:
            message = str(e)
            assert message.startswith(str(path)) or all(
                line.startswith(f"  {path}") or line.startswith("  … and ")
                for line in message.splitlines()[1:]), message
        assert time.process_time() - cpu < 2.0
        r = CliRunner().invoke(main, ["policy", "validate", str(path)])
        assert r.exit_code in (0, 2), (r.exit_code, r.stderr, r.exception)
        # (a key named "Traceback" is echoed in its error message: look for Python's header)
        assert "Traceback (most recent call last)" not in r.stderr
        assert "internal error" not in r.stderr
