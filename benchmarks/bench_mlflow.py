"""What MLflow logging adds to `fairgate check`: the Adult example, with and without a run.

Issue 14 (5): a run added 5-10 s to a 4 s gate on the default local store (14 s for the
first run in a new folder). Targets: <= 1.5 s added on the default store and <= 1 s against
a local `mlflow server`, as the median of alternating runs.

Each run is a fresh process, ``python -m fairgate check`` on examples/adult (teacher.onnx vs
student_int8.onnx, a gate that passes), timed wall to wall:

- ``off``: ``--no-mlflow``, the baseline;
- ``store``: MLflow's default store, ``./mlflow.db`` in a folder that already has one;
- ``first``: the default store in a new, empty folder (the database is created and migrated);
- ``server``: a local ``mlflow server`` (sqlite backend, local artifacts, started here on
  127.0.0.1 with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false).

Variants are interleaved round by round (the order rotates each round), so a load that comes
and goes on a shared machine hits them alike; the script prints each variant's median, the
time it adds over ``off`` of the same code, and, with ``--before REV``, the same for fairgate
as of git revision REV (``git archive`` into a temporary folder, put first on PYTHONPATH)
and the ratio of the two.

``--breakdown`` also times, in fresh processes, where a run's time goes: building the run's
record in the CLI, importing mlflow, opening a new sqlite store, and the requests of the
Adult run through fairgate's logging worker (REST against the server, mlflow's client on
sqlite).

    python benchmarks/bench_mlflow.py                       # current tree, 5 rounds, ~3 min
    python benchmarks/bench_mlflow.py --before 508d2f2 --breakdown --rounds 7
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "adult"
VARIANTS = ("off", "store", "first", "server")
TARGETS = {"store": 1.5, "server": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start; see server.log") from None
                time.sleep(0.3)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def checkout(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "fairgate"],
                             capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def gate(code: Path, variant: str, work: Path, server: str) -> tuple[float, float]:
    """One `fairgate check` in a fresh process: its wall time, and the CPU time (user +
    system) of it and its children (the logging process included), in seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GITHUB_"))}
    env["PYTHONPATH"] = str(code)
    if variant == "server":
        env["MLFLOW_TRACKING_URI"] = server
    cwd = work / "store"
    if variant == "first":
        cwd = Path(tempfile.mkdtemp(prefix="first-", dir=work))
    cmd = [sys.executable, "-m", "fairgate", "check", "--policy", str(EXAMPLE / "policy.yaml"),
           "--data", str(EXAMPLE / "audit.parquet"), "--teacher", str(EXAMPLE / "teacher.onnx"),
           "--student", str(EXAMPLE / "student_int8.onnx"), "--out", str(cwd / "out"),
           "--format", "json"]
    if variant == "off":
        cmd.append("--no-mlflow")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0 or (variant != "off" and "MLflow: logged run" not in r.stdout):
        raise RuntimeError(f"{variant} with {code}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    if variant == "first":
        shutil.rmtree(cwd, ignore_errors=True)
    return seconds, cpu


BREAKDOWN = r"""
import json, sys, tempfile, time
from pathlib import Path
from fairgate.integrations.mlflow import run_spec
from fairgate.integrations.mlflow_worker import Worker
from fairgate.report import write_reports
from fairgate.run import GateRequest, run_gate

t = time.perf_counter
E = Path(sys.argv[2])
report = run_gate(GateRequest(policy=E / "policy.yaml", data=E / "audit.parquet",
                              teacher=E / "teacher.onnx", student=E / "student_int8.onnx"))
work = Path(tempfile.mkdtemp())
write_reports(report, work / "out")
out = {}
a = t(); spec = run_spec(report, work / "out", work / "run", {}); b = t()
out["the CLI: the run's record, artifacts staged (in the gate's process)"] = b - a
a = t(); import mlflow; from mlflow.tracking import MlflowClient; b = t()
out["import mlflow (pandas and numpy already imported)"] = b - a
a = t(); MlflowClient(f"sqlite:///{work}/new.db").get_experiment_by_name("x"); b = t()
out["open a new sqlite store (SQLAlchemy, alembic, create + migrate)"] = b - a
for name, uri in (("server, REST", sys.argv[1]), ("sqlite, mlflow's client", f"sqlite:///{work}/new.db")):
    worker = Worker({"tracking_uri": uri, "experiment": "bench", "timeout": 60}, lambda e: None)
    worker.warm_up()
    spec = run_spec(report, work / "out", work / f"run-{len(out)}", {})
    a = t(); runs = worker.run_job({"runs": [spec]}); b = t()
    assert runs[0]["ok"], runs
    n = sum(len(x["metrics"]) for x in spec["batches"])
    out[f"the run's requests ({name}: {n} metrics, dataset, artifacts, end)"] = b - a
print(json.dumps(out))
"""


def breakdown(server: str, repeat: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(ROOT))
    got: dict[str, list[float]] = {}
    for _ in range(repeat):
        r = subprocess.run([sys.executable, "-c", BREAKDOWN, server, str(EXAMPLE)], env=env,
                           capture_output=True, text=True, timeout=600, check=True)
        for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items():
            got.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in got.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="runs of each variant (default 5)")
    p.add_argument("--before", metavar="REV", help="also time fairgate at this git revision")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--breakdown", action="store_true", help="also time the parts of a run")
    args = p.parse_args()
    if "off" not in args.variants:
        args.variants.insert(0, "off")
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"python {sys.version.split()[0]}; {args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="fairgate-bench-mlflow-") as tmp:
        work = Path(tmp)
        codes = {"now": ROOT}
        if args.before:
            codes[args.before] = checkout(args.before, work / "before")
        for name in codes:
            (work / name / "store").mkdir(parents=True)
        (work / "server").mkdir()
        with mlflow_server(work / "server") as server:
            for name, code in codes.items():  # warm up: the store exists, caches are hot
                for v in args.variants:
                    gate(code, v, work / name, server)
            if args.breakdown:
                print("\nWhere a run's time goes (medians of 3 fresh processes):")
                for k, v in breakdown(server, 3).items():
                    print(f"  {k:<78} {v:6.2f} s")
            times: dict[tuple[str, str], list[float]] = {}
            cpus: dict[tuple[str, str], list[float]] = {}
            runs = [(name, v) for name in codes for v in args.variants]
            for i in range(args.rounds):
                shift = i % len(runs)
                for name, v in runs[shift:] + runs[:shift]:
                    wall, cpu = gate(codes[name], v, work / name, server)
                    times.setdefault((name, v), []).append(wall)
                    cpus.setdefault((name, v), []).append(cpu)
                print(f"  round {i + 1}/{args.rounds} done", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"\n{'code':<10} {'variant':<8} {'median':>8} {'min':>7} {'added':>7} {'CPU':>7} "
          f"{'CPU added':>9}  target (wall added)")
    for name in codes:
        for v in args.variants:
            added = med[(name, v)] - med[(name, "off")]
            target = TARGETS.get(v)
            mark = "" if target is None or v == "off" else (
                f"<= {target:g} s: {'met' if added <= target else 'MISSED'}")
            print(f"{name:<10} {v:<8} {med[(name, v)]:7.2f}s {min(times[(name, v)]):6.2f}s "
                  f"{added:+6.2f}s {cpu[(name, v)]:6.2f}s {cpu[(name, v)] - cpu[(name, 'off')]:+8.2f}s"
                  f"  {mark}")
    if args.before:
        print("\nadded by logging, before -> now (wall; CPU):")
        for v in args.variants:
            if v == "off":
                continue
            before = med[(args.before, v)] - med[(args.before, "off")]
            now = med[("now", v)] - med[("now", "off")]
            ratio = f"{before / now:.1f}x less" if now > 0.05 else "now within noise"
            cb = cpu[(args.before, v)] - cpu[(args.before, "off")]
            cn = cpu[("now", v)] - cpu[("now", "off")]
            print(f"  {v:<8} {before:+6.2f}s -> {now:+6.2f}s ({ratio});  CPU {cb:+6.2f}s -> "
                  f"{cn:+6.2f}s")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
