"""The temperature experiment on UCI Adult: does distillation temperature move group fairness?

Run from the repository root (needs torch, like examples/adult/build.py; fairgate's tests
do not)::

    python examples/temperature/run_experiment.py --adult-dir /work/shared/data/adult

What it does, deterministically (one thread, fixed seeds):

1. Reuses ``examples/adult/build.py`` (imported, not copied): the same train split, the same
   ``ColumnTransformer`` and its ONNX export, the same MLP class and training loop.
2. Teacher = the committed ``examples/adult/teacher.onnx``. Its logits on the train rows are
   read from the graph itself (the input of its final Softmax, exposed as an extra output),
   so the students learn from exactly the model that is gated, not from a retrained copy.
3. Students: the architecture of ``student_distilled_T4`` (46 → 16 → 2, ReLU), Adam lr 3e-3,
   batch 256, 12 epochs, loss ``alpha T² KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) CE``
   with alpha = 0.7, at T in {1, 2, 4, 6, 8, 10}; and a non-distilled student (NDS): the same
   network, optimiser and epochs on the hard labels only (cross-entropy). Seed k sets the
   initial weights (``torch.manual_seed(1 + k)``) and the batch order (a generator seeded k,
   advanced past the 6 teacher epochs as in build.py), the same for every T and the NDS, so
   seed 0 at T = 4 repeats build.py's recipe for ``student_distilled_T4``.
4. Each student is exported behind the preprocessing graph (the same eleven per-column
   inputs and ``probabilities`` output as the example models) to ``models/<name>.onnx``.
5. Runs ``fairgate compare`` (the real CLI, in a subprocess) on all students against the
   teacher with ``policy.yaml`` here, writing ``compare/``.
6. Reads ``compare/compare.json`` and every ``compare/<name>/report.json`` and writes
   ``results.csv`` (one row per student), ``results.md`` (tables) and ``temperature.png``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import onnx
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ADULT = ROOT / "examples" / "adult"
TEMPERATURES = (1, 2, 4, 6, 8, 10)
ALPHA = 0.7
EPOCHS, LR, HIDDEN = 12, 3e-3, 16
TEACHER_EPOCHS = 6  # batch orders the teacher consumed in build.py


def load_build():
    spec = importlib.util.spec_from_file_location("adult_build", ADULT / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- training


def teacher_logits(build, train) -> torch.Tensor:
    """Pre-softmax outputs of the committed teacher.onnx on the train rows."""
    model = onnx.load(ADULT / "teacher.onnx")
    (softmax,) = [n for n in model.graph.node if n.op_type == "Softmax"]
    model.graph.output.append(onnx.helper.make_tensor_value_info(softmax.input[0],
                                                                 onnx.TensorProto.FLOAT, None))
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    probs, logits = sess.run([build.OUTPUT_NAME, softmax.input[0]], build.ort_feed(train))
    err = float(np.abs(torch.softmax(torch.from_numpy(logits), 1).numpy() - probs).max())
    assert err < 1e-5, f"softmax(teacher logits) differs from its probabilities by {err}"
    return torch.from_numpy(logits)


def batch_generator(seed: int, n: int) -> torch.Generator:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(TEACHER_EPOCHS):
        torch.randperm(n, generator=gen)
    return gen


def train_distilled(build, X, y, t_logits, T: float, seed: int):
    """build.py's distillation loop, with the temperature as a parameter."""
    torch.manual_seed(1 + seed)
    student = build.MLP(X.shape[1], [HIDDEN])
    gen = batch_generator(seed, len(X))
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    student.train()
    for _ in range(EPOCHS):
        for idx in build.batches(len(X), 256, gen):
            opt.zero_grad()
            s = student(X[idx])
            soft_t = F.softmax(t_logits[idx] / T, dim=1)
            kl = F.kl_div(F.log_softmax(s / T, dim=1), soft_t, reduction="batchmean")
            loss = ALPHA * T * T * kl + (1.0 - ALPHA) * F.cross_entropy(s, y[idx])
            loss.backward()
            opt.step()
    student.eval()
    return student


def train_nds(build, X, y, seed: int):
    """The same student trained on the hard labels only (no teacher)."""
    torch.manual_seed(1 + seed)
    student = build.MLP(X.shape[1], [HIDDEN])
    build.train_ce(student, X, y, epochs=EPOCHS, lr=LR, gen=batch_generator(seed, len(X)))
    return student


def build_models(build, adult_dir: Path, seeds: list[int], models_dir: Path) -> dict[str, dict]:
    build.seed_everything()
    train = build.read_split(adult_dir / "adult.data", test=False)
    audit = build.pd.read_parquet(ADULT / "audit.parquet")
    ct = build.fit_preprocessor(train)
    X = torch.from_numpy(build.transform(ct, train))
    y = torch.from_numpy(build.labels(train))
    X_audit = torch.from_numpy(build.transform(ct, audit))
    pre = build.export_preprocessor(ct)
    t_logits = teacher_logits(build, train)
    models_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, dict] = {}
    for seed in seeds:
        for T in [*TEMPERATURES, None]:
            t0 = time.perf_counter()
            if T is None:
                name, model = f"nds_seed{seed}", train_nds(build, X, y, seed)
                doc = (f"{name}: MLP 1x{HIDDEN} ReLU trained on hard labels only (no "
                       f"distillation), seed {seed}")
            else:
                name = f"T{T}_seed{seed}"
                model = train_distilled(build, X, y, t_logits, float(T), seed)
                doc = (f"{name}: MLP 1x{HIDDEN} ReLU distilled from examples/adult/teacher.onnx "
                       f"at T={T}, alpha={ALPHA:g}, seed {seed}")
            path = models_dir / f"{name}.onnx"
            onnx.save(build.merge(pre, build.export_mlp(model, X.shape[1]), doc), path)
            (probs,) = build.session(path).run([build.OUTPUT_NAME], build.ort_feed(audit))
            with torch.no_grad():
                ref = torch.softmax(model(X_audit), dim=1).numpy()
            err = float(np.abs(probs - ref).max())
            assert err < 1e-4, f"{name}: ONNX differs from torch by {err}"
            info[name] = {"T": T, "seed": seed, "path": path,
                          "train_seconds": time.perf_counter() - t0}
            print(f"  {name:14s} {path.stat().st_size:>6,d} B  {time.perf_counter() - t0:.1f} s",
                  flush=True)
    if 0 in seeds:  # does seed 0 at T = 4 reproduce build.py's committed student?
        (mine,) = build.session(models_dir / "T4_seed0.onnx").run(
            [build.OUTPUT_NAME], build.ort_feed(audit))
        (theirs,) = build.session(ADULT / "student_distilled_T4.onnx").run(
            [build.OUTPUT_NAME], build.ort_feed(audit))
        same = float(np.mean((mine[:, 1] >= 0.5) == (theirs[:, 1] >= 0.5)))
        print(f"T4_seed0 vs examples/adult/student_distilled_T4.onnx: max |Δp| "
              f"{float(np.abs(mine - theirs).max()):.2e}, same decision on {same:.2%} of rows")
    return info


# --------------------------------------------------------------------------- the gate


def run_compare(names: list[str], models_dir: Path, out: Path) -> int:
    def rel(path: Path) -> str:  # repository-relative, so the reports name no local folders
        return os.path.relpath(path, ROOT)

    cmd = [sys.executable, "-m", "fairgate", "compare", "--policy", rel(HERE / "policy.yaml"),
           "--data", rel(ADULT / "audit.parquet"), "--teacher", rel(ADULT / "teacher.onnx"),
           "--out", rel(out), "--no-mlflow"]
    for name in names:
        cmd += ["--candidate", rel(models_dir / f"{name}.onnx")]
    print("$", " ".join(["python", *cmd[1:]]), flush=True)
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode not in (0, 1):
        raise SystemExit(f"fairgate compare failed with exit code {done.returncode}")
    return done.returncode


def kpi(report: dict, metric: str, grouping: str | None) -> dict:
    want = [grouping] if grouping else []
    return next(k for k in report["kpis"] if k["metric"] == metric and k["grouping"] == want)


# column: (metric, grouping or None for the whole audit set, title, which way is fairer)
COLUMNS: dict[str, tuple[str, str | None, str, str]] = {
    "accuracy": ("accuracy", None, "accuracy", "higher is better"),
    "dp_sex": ("demographic_parity_difference", "sex", "DP diff (sex)", "lower is fairer"),
    "dp_race": ("demographic_parity_difference", "race", "DP diff (race)", "lower is fairer"),
    "eo_sex": ("equalized_odds_difference", "sex", "EO diff (sex)", "lower is fairer"),
    "eo_race": ("equalized_odds_difference", "race", "EO diff (race)", "lower is fairer"),
    "lipschitz": ("individual_lipschitz", None, "I(f) Lipschitz", "lower is fairer"),
    "knn": ("knn_consistency", None, "kNN consistency", "higher is fairer"),
    "cf_sex": ("counterfactual_flip_rate", None, "CF flip rate (sex)", "lower is fairer"),
}
TITLES = {c: spec[2] for c, spec in COLUMNS.items()}
GROUP_COLS = ["accuracy", "dp_sex", "dp_race", "eo_sex", "eo_race"]
INDIVIDUAL_COLS = ["lipschitz", "knn", "cf_sex"]


def collect(out: Path, info: dict[str, dict]) -> tuple[list[dict], dict]:
    summary = json.loads((out / "compare.json").read_text())
    rows = []
    teacher: dict = {}
    for c in summary["candidates"]:
        rep = json.loads((out / c["name"] / "report.json").read_text())
        meta = info[c["name"]]
        row = {"candidate": c["name"], "T": "NDS" if meta["T"] is None else meta["T"],
               "seed": meta["seed"], "verdict": c["verdict"],
               "failed_checks": "; ".join(c["failed_checks"]), "rank": c["rank"],
               "on_front": c["on_front"]}
        for col, (metric, grouping, _, _) in COLUMNS.items():
            k = kpi(rep, metric, grouping)
            row[col] = k["student"]
            row[f"{col}_delta"] = k["delta"]
            row[f"{col}_delta_lo"], row[f"{col}_delta_hi"] = k["interval"]["delta"]
            if teacher.setdefault(col, k["teacher"]) != k["teacher"]:
                raise SystemExit(f"{c['name']}: the teacher's {col} differs between reports")
        rows.append(row)
    order = {t: i for i, t in enumerate([*TEMPERATURES, "NDS"])}
    rows.sort(key=lambda r: (order[r["T"]], r["seed"]))
    return rows, teacher


# --------------------------------------------------------------------------- outputs


def mean_sd(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()})


def by_T(rows: list[dict]) -> dict[object, list[dict]]:
    out: dict[object, list[dict]] = {}
    for r in rows:
        out.setdefault(r["T"], []).append(r)
    return out


def trend(rows: list[dict], col: str) -> str:
    """Spearman's rho of a column against T over the distilled students (every seed)."""
    from scipy.stats import spearmanr

    pts = [(r["T"], r[col]) for r in rows if r["T"] != "NDS"]
    rho, p = spearmanr([t for t, _ in pts], [v for _, v in pts])
    return f"rho = {rho:+.2f} (p = {p:.2g}, n = {len(pts)})"


def summary_table(rows: list[dict], teacher: dict, cols: list[str]) -> list[str]:
    """Mean ± sd over seeds per T, the mean change vs the teacher, and the verdicts."""
    deltas = [c for c in cols if c != "accuracy"]
    lines = [
        "| T | " + " | ".join(TITLES[c] for c in cols) + " | "
        + " | ".join(f"Δ {TITLES[c]}" for c in deltas) + " | verdicts |",
        "|---|" + "---:|" * (len(cols) + len(deltas)) + "---|",
        "| teacher | " + " | ".join(f"{teacher[c]:.4f}" for c in cols) + " |"
        + " |" * len(deltas) + " |",
    ]
    for T, group in by_T(rows).items():
        cells = []
        for c in cols:
            m, sd = mean_sd([r[c] for r in group])
            cells.append(f"{m:.4f} ± {sd:.4f}")
        for c in deltas:
            m, _ = mean_sd([r[f"{c}_delta"] for r in group])
            cells.append(f"{m:+.4f}")
        verdicts = [r["verdict"] for r in group]
        vtext = ", ".join(f"{v} {verdicts.count(v)}/{len(group)}"
                          for v in ("pass", "warn", "fail") if v in verdicts)
        lines.append(f"| {T} | " + " | ".join(cells) + f" | {vtext} |")
    return lines


def paired_vs_nds(rows: list[dict], cols: list[str]) -> list[str]:
    nds = {r["seed"]: r for r in rows if r["T"] == "NDS"}
    lines = ["| T | " + " | ".join(TITLES[c] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for T, group in by_T(rows).items():
        if T == "NDS":
            continue
        cells = []
        for c in cols:
            m, sd = mean_sd([r[c] - nds[r["seed"]][c] for r in group])
            cells.append(f"{m:+.4f} ± {sd:.4f}")
        lines.append(f"| {T} | " + " | ".join(cells) + " |")
    return lines


def per_student(rows: list[dict], cols: list[str], tail: bool) -> list[str]:
    extra = " verdict | failed checks |" if tail else ""
    lines = ["| T | seed | " + " | ".join(TITLES[c] for c in cols) + " |" + extra,
             "|---|---|" + "---|" * len(cols) + ("---|---|" if tail else "")]
    for r in rows:
        cells = [f"{r[c]:.4f}<br>Δ {r[c + '_delta']:+.4f} "
                 f"[{r[c + '_delta_lo']:+.4f}, {r[c + '_delta_hi']:+.4f}]" for c in cols]
        end = f" {r['verdict']} | {r['failed_checks'] or '-'} |" if tail else ""
        lines.append(f"| {r['T']} | {r['seed']} | " + " | ".join(cells) + " |" + end)
    return lines


def write_markdown(rows: list[dict], teacher: dict, seeds: list[int], path: Path) -> None:
    n = len(seeds)
    directions = "; ".join(f"{TITLES[c]}: {COLUMNS[c][3]}" for c in COLUMNS)
    lines = [
        "# Temperature experiment: results",
        "",
        f"Generated by `run_experiment.py` (seeds {', '.join(map(str, seeds))}; policy "
        "`examples/temperature/policy.yaml`; audit set `examples/adult/audit.parquet`, "
        "15,060 rows; teacher `examples/adult/teacher.onnx`). Every number is read from the "
        "report.json that `fairgate compare` wrote for the student. Decisions at threshold "
        "0.5. DP diff = demographic_parity_difference, EO diff = equalized_odds_difference "
        "(max − min over the gated groups). I(f) = mean |p(x) − p(x')| / d(x, x') over 200,000 "
        "sampled pairs of audit rows (positive-class probability; Euclidean distance over "
        "the model inputs other than sex and race, numerics standardized, categories "
        "one-hot); kNN consistency = 1 − mean |ŷ − mean ŷ of "
        "the 5 nearest neighbours| over 5,000 query rows; CF flip rate (sex) = share of rows "
        "whose decision changes when only `sex` is set to the other value. "
        f"Directions: {directions}.",
        "",
        f"## Group fairness: mean ± sd over {n} seeds",
        "",
        "Δ = student − teacher, mean over seeds. Verdicts: how many seeds passed the policy "
        "(the policy bounds group fairness and accuracy only).",
        "",
        *summary_table(rows, teacher, GROUP_COLS),
        "",
        f"## Individual fairness: mean ± sd over {n} seeds",
        "",
        *summary_table(rows, teacher, INDIVIDUAL_COLS),
        "",
        "## Distilled student minus NDS, paired by seed",
        "",
        "Seed k gives the distilled students and the NDS the same initial weights and batch "
        "order, so distilled(T, k) − NDS(k) isolates the effect of the teacher's soft labels. "
        f"Mean ± sd over the {n} seeds.",
        "",
        *paired_vs_nds(rows, [*GROUP_COLS, *INDIVIDUAL_COLS]),
        "",
        "## Monotone trend against T (distilled students only, every seed)",
        "",
        "| metric | Spearman's rho vs T |",
        "|---|---|",
        *(f"| {TITLES[c]} | {trend(rows, c)} |" for c in COLUMNS),
        "",
        "## Every student: value, and the paired change vs the teacher with its 95% interval",
        "",
        "Intervals: fairgate's paired intervals (group metrics: 2,000 multinomial bootstrap "
        "resamples of the joint teacher × student counts, percentile, seed 0; individual "
        "metrics: normal intervals from the standard errors of the paired estimates on the row "
        "sample), i.e. uncertainty over the "
        "audit rows for one trained student; they do not include training-seed variation.",
        "",
        *per_student(rows, GROUP_COLS, tail=True),
        "",
        *per_student(rows, INDIVIDUAL_COLS, tail=False),
    ]
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], teacher: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_T(rows)
    Ts = [t for t in groups if t != "NDS"]
    panels = ["dp_sex", "dp_race", "eo_sex", "eo_race", "lipschitz", "knn", "cf_sex", "accuracy"]
    fig, axes = plt.subplots(4, 2, figsize=(10, 13), sharex=True)
    for ax, col in zip(axes.flat, panels, strict=True):
        stats = [mean_sd([r[col] for r in groups[t]]) for t in Ts]
        ax.errorbar(Ts, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                    capsize=3, label="distilled student (mean ± sd over seeds)")
        for t in Ts:
            ax.scatter([t] * len(groups[t]), [r[col] for r in groups[t]], s=10, color="C0",
                       alpha=0.35)
        ax.axhline(teacher[col], color="k", lw=1.2, label="teacher")
        m, sd = mean_sd([r[col] for r in groups["NDS"]])
        ax.axhline(m, color="C3", ls="--", lw=1.2, label="NDS (mean ± sd)")
        ax.axhspan(m - sd, m + sd, color="C3", alpha=0.12)
        ax.set_title(f"{TITLES[col]} ({COLUMNS[col][3]})", fontsize=10)
        ax.set_xticks(Ts)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("distillation temperature T")
    axes[0, 0].legend(fontsize=8, loc="best")
    n = len(groups["NDS"])
    fig.suptitle(f"UCI Adult audit set: students distilled at temperature T ({n} seeds)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adult-dir", type=Path, default=Path("/work/shared/data/adult"),
                    help="folder with adult.data (the train split)")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds per T (0..N-1)")
    ap.add_argument("--skip-training", action="store_true",
                    help="reuse models/*.onnx; only gate and tabulate")
    args = ap.parse_args(argv)
    seeds = list(range(args.seeds))
    models_dir, out = HERE / "models", HERE / "compare"
    names = [f"T{T}_seed{s}" for s in seeds for T in TEMPERATURES] + [f"nds_seed{s}" for s in seeds]
    t0 = time.perf_counter()
    if args.skip_training:
        info = {n: {"T": None if n.startswith("nds") else int(n[1:].split("_")[0]),
                    "seed": int(n.rsplit("seed", 1)[1])} for n in names}
    else:
        info = build_models(load_build(), args.adult_dir, seeds, models_dir)
    t1 = time.perf_counter()
    code = run_compare(names, models_dir, out)
    t2 = time.perf_counter()
    rows, teacher = collect(out, info)
    write_csv(rows, HERE / "results.csv")
    write_markdown(rows, teacher, seeds, HERE / "results.md")
    plot(rows, teacher, HERE / "temperature.png")
    print(f"training+export {t1 - t0:.1f} s; fairgate compare {t2 - t1:.1f} s (exit {code}); "
          f"wrote results.csv, results.md, temperature.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
