"""How often ``fairgate compare`` tells two candidates apart: false claims and power.

Not a test. Each audit draws ``rows`` rows from a fixed population (sex × race groups, a
label, a teacher's decisions) and two candidates that each flip the teacher's decision on a
random share of rows. In the *equal* regime both candidates flip ``--flip`` of every
group's rows, independently: they are different models with exactly the same population
value of every metric, so any "better beyond noise" between them is a false claim, and the
module's rule promises at most 1 − confidence per objective. In the *worse* regime B also
turns ``--harm`` of the teacher's correct decisions wrong: B's accuracy is truly lower, and
the share of audits that say so is the power. Every audit goes through the real
``fairgate.compare`` (in-memory audit set, score columns), as a user would run it.

    python benchmarks/sim_compare.py                      # 200 audits a regime
    python benchmarks/sim_compare.py --audits 50 --rows 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

import fairgate
from fairgate.comparison import OBJECTIVES, better_beyond_noise

POLICY = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
  intersections: true
  min_group_size: 30
checks:
  - {id: acc, metric: accuracy, max_decrease: 1.0}
statistics:
  confidence: 0.95
  resamples: 1000
  seed: 0
"""


def audit(rng: np.random.Generator, rows: int, flip: float, harm: float) -> pd.DataFrame:
    sex = rng.choice(["F", "M"], rows)
    race = rng.choice(["A", "B", "C"], rows, p=[0.6, 0.3, 0.1])
    p_y = np.where(sex == "F", 0.3, 0.4) + np.where(race == "C", 0.1, 0.0)
    y = (rng.random(rows) < p_y).astype(int)
    right = rng.random(rows) < 0.8  # the teacher is right on 80% of rows
    t = np.where(right, y, 1 - y)
    a = np.where(rng.random(rows) < flip, 1 - t, t)
    b = np.where(rng.random(rows) < flip, 1 - t, t)
    b = np.where((b == y) & (rng.random(rows) < harm), 1 - b, b)
    return pd.DataFrame({"sex": sex, "race": race, "y": y, "t": t.astype(float),
                         "a": a.astype(float), "b": b.astype(float)})


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def run(regime: str, audits: int, rows: int, flip: float, harm: float, policy: Path) -> None:
    rng = np.random.default_rng(12345)
    claims = np.zeros(len(OBJECTIVES), dtype=int)  # either direction
    b_worse = np.zeros(len(OBJECTIVES), dtype=int)  # A better than B beyond noise
    t0 = time.perf_counter()
    for _ in range(audits):
        result = fairgate.compare(policy, audit(rng, rows, flip, harm), teacher_scores="t",
                                  candidate_scores=["a", "b"])
        a, b = (result.candidate(n) for n in ("a", "b"))
        for k, o in enumerate(OBJECTIVES):
            ca, cb = a.objectives[k].changes, b.objectives[k].changes
            ab, ba = (better_beyond_noise(ca, cb, o.sense), better_beyond_noise(cb, ca, o.sense))
            claims[k] += ab or ba
            b_worse[k] += ab
    took = time.perf_counter() - t0
    print(f"\n{regime}: {audits} audits of {rows:,} rows, flip {flip}, harm {harm} "
          f"({took:.0f} s, {took / audits:.2f} s an audit)")
    for k, o in enumerate(OBJECTIVES):
        count = int(b_worse[k] if regime == "worse" else claims[k])
        lo, hi = clopper_pearson(count, audits)
        what = ("A better than B beyond noise (power)" if regime == "worse"
                else "any claim (false; the rule allows 0.05)")
        print(f"  {o.name:9s} {what}: {count}/{audits} = {count / audits:.3f} "
              f"[{lo:.3f}, {hi:.3f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audits", type=int, default=200)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--harm", type=float, default=0.03)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        run("equal", args.audits, args.rows, args.flip, 0.0, policy)
        run("worse", args.audits, args.rows, args.flip, args.harm, policy)


if __name__ == "__main__":
    main()
