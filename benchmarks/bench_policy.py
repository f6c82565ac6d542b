"""Cost of loading hostile and worst-case policies (issue 10, section 3).

Each case is written to a temporary folder and loaded with `load_policy` in a child process
(so a hang or an out-of-memory shows as such, not as a dead benchmark), under a time limit
and an address-space limit. Printed per case: the load time inside the child (best of
--repeat, wall and CPU: CPU time is what a shared machine does not inflate), the child's peak
RSS (about 80 MB of it is Python with fairgate's imports) and the outcome (valid, exit-2
error, or what broke).

    python benchmarks/bench_policy.py                                  # this checkout
    PYTHONPATH=/path/to/old/checkout python benchmarks/bench_policy.py   # another one
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAD = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
"""
CHECK = "  - {{id: c{i}, metric: demographic_parity_difference, on: [sex], max_increase: 0.02}}\n"


def _checks(n: int) -> str:
    return HEAD + "checks:\n" + "".join(CHECK.format(i=i) for i in range(n))


def _bomb() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    return text


def _padded(filler: Callable[[int], str], size: int = 255 * 1024) -> str:
    text = _checks(2)
    return text + filler(size - len(text.encode()))


# name -> policy text; the first group is hostile, the second the worst cases within limits
CASES: dict[str, Callable[[], str]] = {
    "alias bomb (342 bytes, 10^9 values)": _bomb,
    "flow nesting 1,000 deep": lambda: _checks(1) + "x: " + "[" * 1000 + "]" * 1000 + "\n",
    "flow nesting 100,000 deep": lambda: _checks(1) + "x: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "block nesting 1,000 deep": lambda: _checks(1) + "x:\n  " + "- " * 1000 + "v\n",
    "block nesting 100,000 deep": lambda: _checks(1) + "x:\n  " + "- " * 100_000 + "v\n",
    "10 MB policy (one comment)": lambda: _checks(2) + "# " + "x" * (10 << 20) + "\n",
    "10 MB policy (checks)": lambda: _checks(100_000),
    "--- within limits ---": lambda: "",
    "255 KiB comment": lambda: _padded(lambda n: "#" + "x" * (n - 2) + "\n"),
    "255 KiB plain scalar": lambda: _padded(lambda n: "x: " + "y" * (n - 4) + "\n"),
    "255 KiB quoted scalar with escapes": lambda: _padded(
        lambda n: 'x: "' + "\\t" * ((n - 6) // 2) + '"\n'),
    "255 KiB blank lines": lambda: _padded(lambda n: "\n" * n),
    "255 KiB multi-line plain scalar": lambda: _padded(lambda n: "x: a\n" + " a\n" * ((n - 5) // 3)),
    "255 KiB short comment lines": lambda: _padded(lambda n: "#\n" * (n // 2)),
    "4,990 scalars in one flow list": lambda: _checks(1) + "x: [" + ",".join(["1"] * 4_950) + "]\n",
    "490 valid checks (~4,950 values)": lambda: _checks(490),
    "1,650 distinct unknown metrics": lambda: HEAD + "checks:\n" + "".join(
        f"  - {{metric: dp_diff{i}}}\n" for i in range(1_650)),
    "80 x 62-deep flow nesting": lambda: _checks(1) + "x:\n" + "".join(
        "  - " + "[" * 61 + "]" * 61 + "\n" for _ in range(79)),
    "4,900 alias uses": lambda: _checks(1) + "g: &g sex\nx: [" + ",".join(["*g"] * 4_900) + "]\n",
    "alias chain to ~4,950 values": lambda: _checks(1) + "a: &a [" + ",".join(["1"] * 99)
    + "]\nx: [" + ",".join(["*a"] * 48) + "]\n",
}

CHILD = textwrap.dedent("""\
    import resource, sys, time
    from pathlib import Path
    from fairgate.errors import FairgateError
    from fairgate.policy import load_policy
    wall = cpu = float("inf")
    outcome = ""
    for _ in range({repeat}):
        t, c = time.perf_counter(), time.process_time()
        try:
            load_policy(Path(sys.argv[1]))
            outcome = "valid"
        except FairgateError as e:
            outcome = f"exit {{e.exit_code}}: " + str(e).splitlines()[0][:100]
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{{wall:.3f}}\t{{cpu:.3f}}\t{{rss:.0f}}\t{{outcome}}")
""")


def _limit_memory(gb: float) -> Callable[[], None]:
    def apply() -> None:
        import resource

        limit = int(gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def run_case(path: Path, timeout: float, mem_gb: float, repeat: int) -> str:
    # the child runs in the case's folder, so PYTHONPATH (default: this checkout) decides
    # which fairgate it measures, not the current directory
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", CHILD.format(repeat=repeat), str(path)],
                              capture_output=True, text=True, timeout=timeout, cwd=path.parent,
                              env=env, preexec_fn=_limit_memory(mem_gb))
    except subprocess.TimeoutExpired:
        return f"{'-':>8} {'-':>8} {'-':>8}  TIMEOUT after {timeout:.0f} s"
    if done.returncode != 0 or not done.stdout:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return (f"{'-':>8} {'-':>8} {'-':>8}  crashed after {time.perf_counter() - started:.1f} s "
                f"(with start-up): {last[:90]}")
    wall, cpu, rss, outcome = done.stdout.strip().split("\t", 3)
    return f"{float(wall):7.3f}s {float(cpu):7.3f}s {float(rss):5.0f} MB  {outcome}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    ap.add_argument("--mem-gb", type=float, default=3.0, help="address-space limit per case")
    ap.add_argument("--repeat", type=int, default=3, help="loads per case (best is shown)")
    ap.add_argument("-k", default="", help="only the cases whose name contains this")
    args = ap.parse_args()
    print(f"nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, "
          f"python {sys.version.split()[0]}")
    print(f"{'case':38} {'size':>13}  {'wall':>7} {'cpu':>8} {'peak RSS':>8}  outcome")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in CASES.items():
            if name.startswith("---"):
                print(name)
                continue
            if args.k not in name:
                continue
            path = Path(tmp) / "policy.yaml"
            text = make()
            path.write_text(text, encoding="utf-8")
            size = len(text.encode())
            print(f"{name:38} {size / 1024:9,.0f} KiB  "
                  f"{run_case(path, args.timeout, args.mem_gb, args.repeat)}", flush=True)


if __name__ == "__main__":
    main()
