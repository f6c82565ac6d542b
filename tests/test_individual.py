"""Individual fairness (fairgate/core/individual.py) against independent computations.

Oracles: a pure-Python splitmix64 for the row hash and a direct bottom-S selection for the
sampler; scipy's standardized Euclidean distance; a pure-Python double loop over all pairs
for I(f); a brute-force numpy neighbour search and scikit-learn's own leave-self-out query
for kNN consistency, and a literal delete-one recomputation for its jackknife; hand-built
ONNX models whose flips are worked out by hand (and one exported pipeline fed with
onnxruntime directly) for the counterfactual flip rate. Standard errors are checked
against the spread of the estimate over independent replicate samples.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.spatial.distance import pdist
from sklearn.neighbors import NearestNeighbors

from fairgate.core.individual import (
    Estimate,
    RowSampler,
    counterfactual_flips,
    embed,
    knn_consistency,
    lipschitz,
    nearest_neighbours,
    row_hash,
)
from fairgate.errors import DataError
from fairgate.inputs.model import OnnxPredictor
from fairgate.inputs.outputs import ReadSettings
from tests.conftest import EXAMPLE, MODELS

# ----------------------------------------------------------------------------- sampler

MASK = (1 << 64) - 1


def splitmix_reference(seed: int, row: int) -> int:
    """splitmix64 written out with Python ints, as in Vigna's reference code."""

    def mix(x: int) -> int:
        x &= MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
        return x ^ (x >> 31)

    return mix((row * 0x9E3779B97F4A7C15 + mix(seed)) & MASK)


def test_row_hash_is_splitmix64() -> None:
    rows = np.array([0, 1, 2, 12345, 2**31 + 7, 2**40 + 3])
    for seed in (0, 1, 2**63 + 5):
        got = row_hash(seed, rows)
        assert [int(x) for x in got] == [splitmix_reference(seed, int(r)) for r in rows]


def _frame(n: int) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({
        "x": rng.normal(size=n),
        "sex": pa.array(rng.choice(["Female", "Male"], size=n)),
        "k": np.arange(n, dtype=np.int64),
    })


def _sample(table: pa.Table, batch_rows: int, size: int, seed: int, columns=None):
    sampler = RowSampler(size, seed, columns)
    offset = 0
    for batch in table.to_batches(max_chunksize=batch_rows):
        score = batch.column("x").to_numpy() * 2
        sampler.add(batch, offset, {"score": score})
        offset += batch.num_rows
    return sampler.result()


@pytest.mark.parametrize("size", [1, 300, 5000])
def test_sampler_is_the_same_for_any_batch_size(size: int) -> None:
    table = _frame(4000)
    results = [_sample(table, b, size, seed=11) for b in (1, 7, 256, 1000, 4000)]
    first = results[0]
    assert len(first.rows) == min(size, 4000)
    assert first.seen == 4000
    for r in results[1:]:
        assert np.array_equal(r.rows, first.rows)
        assert r.table.equals(first.table)
        assert np.array_equal(r.extra["score"], first.extra["score"])


def test_sampler_keeps_the_rows_with_the_smallest_hash() -> None:
    table = _frame(5000)
    got = _sample(table, 333, 400, seed=3)
    hashes = [splitmix_reference(3, r) for r in range(5000)]
    want = sorted(sorted(range(5000), key=lambda r: (hashes[r], r))[:400])
    assert got.rows.tolist() == want
    assert got.table.column("k").to_pylist() == want  # the rows travel with their index
    assert np.array_equal(got.extra["score"], table.column("x").to_numpy()[want] * 2)


def test_sampler_is_uniform_and_seeded() -> None:
    table = _frame(100_000).select(["k"])
    a = _sample(table.append_column("x", pa.array(np.zeros(100_000))), 10_000, 2000, seed=0)
    b = _sample(table.append_column("x", pa.array(np.zeros(100_000))), 10_000, 2000, seed=1)
    counts = np.bincount(a.rows // 10_000, minlength=10)
    chi2 = float(((counts - 200) ** 2 / 200).sum())
    assert chi2 < 27.9  # the 0.999 quantile of chi-square with 9 degrees of freedom
    overlap = len(np.intersect1d(a.rows, b.rows))
    assert overlap < 80  # 40 expected (2000 · 2000 / 100,000) for independent samples


def test_sampler_selects_columns_and_checks_extras() -> None:
    table = _frame(50)
    got = _sample(table, 20, 10, seed=0, columns=["sex"])
    assert got.table.column_names == ["sex"]
    sampler = RowSampler(5, 0)
    with pytest.raises(ValueError, match=r"extra column 'score' has 3 values for 50 rows"):
        sampler.add(table.to_batches()[0], 0, {"score": np.zeros(3)})
    sampler = RowSampler(5, 0)
    sampler.add(table.slice(0, 10).to_batches()[0], 0, {"score": np.zeros(10)})
    with pytest.raises(ValueError, match=r"extra columns \('s',\) differ from the first batch's"):
        sampler.add(table.slice(10, 10).to_batches()[0], 10, {"s": np.zeros(10)})
    with pytest.raises(ValueError, match="sample size must be >= 1, got 0"):
        RowSampler(0, 0)


def test_sampler_batch_is_one_record_batch() -> None:
    got = _sample(_frame(1000), 100, 64, seed=5)
    batch = got.batch()
    assert isinstance(batch, pa.RecordBatch)
    assert batch.num_rows == 64
    assert batch.column("k").to_pylist() == got.rows.tolist()


# ----------------------------------------------------------------------------- distance


def test_embedding_distance_is_standardized_euclidean() -> None:
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(5, 3, 40), "b": rng.integers(0, 100, 40), "c": rng.exponential(1, 40)}
    e = embed(x, ["a", "b", "c"])
    raw = np.column_stack([x["a"], x["b"], x["c"]]).astype(float)
    want = pdist(raw, "seuclidean", V=raw.var(axis=0))  # population variance: ddof 0
    assert np.allclose(pdist(e.matrix), want, rtol=1e-12, atol=1e-12)
    assert e.numeric == ("a", "b", "c")
    assert e.scale["a"] == pytest.approx(float(np.std(x["a"])), rel=1e-12)


def test_embedding_categorical_mismatch_adds_one() -> None:
    x = {"n": np.array([0.0, 2.0, 0.0, 2.0]), "c": np.array(["u", "u", "v", "w"], dtype=object)}
    e = embed(x, ["n", "c"])
    d2 = pdist(e.matrix, "sqeuclidean")
    # n has σ = 1, so a difference of 2 adds 4; a category mismatch adds 1
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    want = [4 + 0, 0 + 1, 4 + 1, 4 + 1, 0 + 1, 4 + 1]
    assert dict(zip(pairs, d2, strict=True)) == pytest.approx(dict(zip(pairs, want, strict=True)))
    forced = embed({"code": np.array([1, 2, 3, 1])}, ["code"], categorical=["code"])
    assert forced.categorical == ("code",)
    assert pdist(forced.matrix, "sqeuclidean") == pytest.approx([1, 1, 0, 1, 1, 1], abs=1e-15)


def test_embedding_drops_constant_features_and_refuses_missing() -> None:
    e = embed({"a": np.ones(5), "b": np.arange(5.0), "s": np.array(["x"] * 5)}, ["a", "b", "s"])
    assert (e.numeric, e.constant, e.matrix.shape) == (("b",), ("a", "s"), (5, 1))
    with pytest.raises(DataError) as err:
        embed({"a": np.array([1.0, np.nan])}, ["a"])
    assert str(err.value) == ("individual fairness feature 'a' has 1 missing or non-finite value(s) "
                              "in the sampled rows")
    with pytest.raises(DataError) as err:
        embed(pa.table({"s": pa.array(["x", None, None])}), ["s"])
    assert str(err.value) == "individual fairness feature 's' has 2 missing value(s) in the sampled rows"
    with pytest.raises(DataError) as err:
        embed(pa.table({"a": [1.0]}), ["age"])
    assert str(err.value) == ("individual fairness feature 'age' is not in the sampled rows "
                              "(columns: a)")


# ----------------------------------------------------------------------------- Lipschitz


def lipschitz_all_pairs(z: np.ndarray, f: np.ndarray) -> tuple[float, int]:
    """Direct O(n²) mean of |f_i − f_j| / d_ij over i < j with d > 0, in plain Python."""
    total, used, zero = 0.0, 0, 0
    rows = z.tolist()
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            d = math.sqrt(sum((a - b) ** 2 for a, b in zip(rows[i], rows[j], strict=True)))
            if d == 0:
                zero += 1
                continue
            total += abs(float(f[i]) - float(f[j])) / d
            used += 1
    return total / used, zero


def _population(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[:, 0] = np.round(x[:, 0] * 2)  # a discrete feature, as audit sets have
    w = np.array([1.0, -0.5, 0.8, 0.3])
    t = 1 / (1 + np.exp(-(x @ w)))
    s = 1 / (1 + np.exp(-(x @ (w + np.array([0.2, 0.3, -0.2, 0.1])))))
    return (x - x.mean(0)) / x.std(0), t, s


def test_lipschitz_over_all_pairs_matches_the_direct_computation() -> None:
    z, t, s = _population(120)
    z[5] = z[6]  # one pair at distance 0 with different scores
    res = lipschitz(z, t, s, pairs=10_000)
    assert res.exact and res.pairs_drawn == 120 * 119 // 2
    want_t, zero = lipschitz_all_pairs(z, t)
    want_s, _ = lipschitz_all_pairs(z, s)
    assert res.paired.teacher.value == pytest.approx(want_t, rel=1e-12, abs=0)
    assert res.paired.student is not None and res.paired.delta is not None
    assert res.paired.student.value == pytest.approx(want_s, rel=1e-12, abs=0)
    assert res.paired.delta.value == pytest.approx(want_s - want_t, rel=1e-9, abs=1e-14)
    assert (res.zero_distance_pairs, zero) == (1, 1)
    assert res.zero_distance_conflicts == (1, 1)
    assert res.pairs_used == res.pairs_drawn - 1
    assert res.se_pairs == (0.0, 0.0)


def test_lipschitz_pair_sample_is_within_its_standard_error_of_all_pairs() -> None:
    z, t, _ = _population(400)
    full = lipschitz(z, t, pairs=10**6).paired.teacher.value
    misses = []
    for seed in range(40):
        res = lipschitz(z, t, pairs=3000, seed=seed)
        assert not res.exact
        misses.append(abs(res.paired.teacher.value - full) / res.se_pairs[0])
    misses_arr = np.array(misses)
    assert misses_arr.max() < 4
    assert np.mean(misses_arr < 1.96) >= 0.85  # about 95 % expected
    again = lipschitz(z, t, pairs=3000, seed=7)
    assert again == lipschitz(z, t, pairs=3000, seed=7)


def test_lipschitz_standard_error_matches_the_spread_over_replicate_samples() -> None:
    """Rows and pairs drawn afresh 400 times from a population: sd of the estimate ≈ its se."""
    z, t, s = _population(100_000, seed=2)
    est, se, est_d, se_d = [], [], [], []
    for r in range(400):
        idx = np.random.default_rng(1000 + r).choice(len(z), 300, replace=False)
        res = lipschitz(z[idx], t[idx], s[idx], pairs=4000, seed=r)
        assert res.paired.delta is not None
        est.append(res.paired.teacher.value)
        se.append(res.paired.teacher.se)
        est_d.append(res.paired.delta.value)
        se_d.append(res.paired.delta.se)
    for values, errors in ((est, se), (est_d, se_d)):
        ratio = np.std(values, ddof=1) / math.sqrt(float(np.mean(np.square(errors))))
        assert 0.85 < ratio < 1.15, ratio  # 400 replicates: the sd itself is within ±7 %


def test_lipschitz_undefined_cases_say_why() -> None:
    res = lipschitz(np.zeros((1, 2)), np.array([0.5]))
    assert math.isnan(res.paired.teacher.value)
    assert res.paired.teacher.reason == "needs at least 2 sampled rows, got 1"
    same = lipschitz(np.zeros((4, 0)), np.array([0.1, 0.2, 0.3, 0.3]), np.full(4, 0.5))
    assert same.paired.delta is not None
    assert math.isnan(same.paired.delta.value)
    assert same.paired.teacher.reason == ("0 of 6 sampled pairs have a positive distance "
                                          "(the features do not tell the 4 sampled rows apart)")
    why = same.paired.teacher.reason
    assert same.paired.delta.reason == f"teacher: {why}; student: {why}"
    assert same.zero_distance_conflicts == (5, 0)


def test_estimate_interval_and_relative_error() -> None:
    e = Estimate(0.2, 0.01, 100)
    lo, hi = e.interval(0.95)
    assert (lo, hi) == pytest.approx((0.2 - 1.959964 * 0.01, 0.2 + 1.959964 * 0.01), rel=1e-6)
    assert e.relative_error() == pytest.approx(1.959964 * 0.05, rel=1e-6)
    assert math.isnan(Estimate(math.nan, math.nan, 0, "x").relative_error())


# ----------------------------------------------------------------------------- kNN consistency


def brute_neighbours(z: np.ndarray, k: int) -> np.ndarray:
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def consistency_brute(z: np.ndarray, y: np.ndarray, k: int, rows: np.ndarray | None = None) -> float:
    nb = brute_neighbours(z, k)
    rows = np.arange(len(z)) if rows is None else rows
    return float(1 - np.mean(np.abs(y[rows] - y[nb[rows]].mean(axis=1))))


def _decisions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    t = (z @ [1.0, 0.5, -0.5] + rng.normal(0, 0.7, n) > 0).astype(float)
    s = (z @ [0.8, 0.7, -0.4] + rng.normal(0, 0.7, n) > 0).astype(float)
    return z, t, s


@pytest.mark.parametrize("k", [1, 5, 10])
def test_knn_consistency_matches_brute_force_and_sklearn(k: int) -> None:
    z, t, s = _decisions(300)
    res = knn_consistency(z, t, s, k=k, queries=10_000)
    assert res.queries == 300 and res.reference == 300
    assert res.paired.teacher.value == pytest.approx(consistency_brute(z, t, k), abs=1e-12)
    assert res.paired.student is not None and res.paired.delta is not None
    assert res.paired.student.value == pytest.approx(consistency_brute(z, s, k), abs=1e-12)
    # scikit-learn's query without X leaves each point out of its own neighbours
    idx = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(return_distance=False)
    sk = 1 - np.mean(np.abs(t - t[idx].mean(axis=1)))
    assert res.paired.teacher.value == pytest.approx(sk, abs=1e-12)
    assert res.paired.delta.value == pytest.approx(
        consistency_brute(z, s, k) - consistency_brute(z, t, k), abs=1e-12)


def module_queries(n: int, q: int, seed: int) -> np.ndarray:
    """The documented query draw: stream crc32("knn_consistency") of the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"knn_consistency")]))
    return np.sort(rng.choice(n, size=q, replace=False))


def test_knn_query_sample_matches_brute_force_on_the_same_queries() -> None:
    z, t, _ = _decisions(500)
    res = knn_consistency(z, t, k=5, queries=120, seed=4)
    assert res.queries == 120
    want = consistency_brute(z, t, 5, module_queries(500, 120, 4))
    assert res.paired.teacher.value == pytest.approx(want, abs=1e-12)
    assert res.paired.teacher.value != knn_consistency(z, t, k=5, queries=120, seed=5).paired.teacher.value


def test_knn_jackknife_equals_literal_delete_one_recomputation() -> None:
    z, t, s = _decisions(60, seed=3)
    k = 4
    for queries in (60, 25):
        res = knn_consistency(z, t, s, k=k, queries=queries, seed=1)
        q = np.arange(60) if queries >= 60 else module_queries(60, queries, 1)
        thetas = []
        for r in range(60):
            keep = np.delete(np.arange(60), r)
            pos = {int(row): i for i, row in enumerate(keep)}
            rows = np.array([pos[int(i)] for i in q if i != r])
            zt = z[keep]
            thetas.append((consistency_brute(zt, t[keep], k, rows), consistency_brute(zt, s[keep], k, rows)))
        arr = np.array(thetas)
        for col, est in ((0, res.paired.teacher), (1, res.paired.student)):
            assert est is not None
            jack = math.sqrt(59 / 60 * ((arr[:, col] - arr[:, col].mean()) ** 2).sum())
            assert est.se == pytest.approx(jack, rel=1e-9)
        d = arr[:, 1] - arr[:, 0]
        assert res.paired.delta is not None
        jack_d = math.sqrt(59 / 60 * ((d - d.mean()) ** 2).sum())
        assert res.paired.delta.se == pytest.approx(jack_d, rel=1e-9)


def test_knn_standard_error_is_conservative_over_replicate_samples() -> None:
    """The jackknife errs on the large side (Efron–Stein), but not by much."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(100_000, 3))
    y = (x @ [1.0, 0.5, -0.5] + rng.normal(0, 0.7, len(x)) > 0).astype(float)
    est, se = [], []
    for r in range(250):
        idx = np.random.default_rng(r).choice(len(x), 800, replace=False)
        res = knn_consistency(x[idx], y[idx], k=5, queries=300, seed=r)
        est.append(res.paired.teacher.value)
        se.append(res.paired.teacher.se)
    ratio = np.std(est, ddof=1) / math.sqrt(float(np.mean(np.square(se))))
    assert 0.6 < ratio < 1.05, ratio


def test_knn_excludes_self_among_duplicates() -> None:
    # six copies of one point (decision 1) and far away points (decision 0)
    z = np.vstack([np.zeros((6, 2)), np.arange(1, 21)[:, None] * np.array([[10.0, 0.0]])])
    y = np.array([1.0] * 6 + [0.0] * 20)
    nb = nearest_neighbours(z, np.arange(6), 5)
    for row in range(6):
        assert row not in nb[row]
        assert set(nb[row]) <= set(range(6))
    res = knn_consistency(z, y, k=5, queries=100)
    assert res.paired.teacher.value == pytest.approx(consistency_brute(z, y, 5), abs=1e-12)


def test_knn_undefined_cases_say_why() -> None:
    res = knn_consistency(np.zeros((6, 1)), np.zeros(6), k=5)
    assert res.paired.teacher.reason == "needs at least k + 2 = 7 sampled rows, got 6"
    res = knn_consistency(np.zeros((10, 0)), np.zeros(10), np.ones(10), k=5)
    assert res.paired.delta is not None and math.isnan(res.paired.delta.value)
    assert res.paired.teacher.reason == ("no feature varies on the sampled rows: every row is "
                                         "every row's neighbour")


# ----------------------------------------------------------------------------- counterfactual flips


def _save(path: Path, nodes: list, inputs: list, opsets: dict[str, int]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [None, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def string_model(path: Path, codes: dict[str, float], bias: float) -> Path:
    """prob = sigmoid(x + code(attr) + bias), attr a string input encoded by a LabelEncoder."""
    from onnx import TensorProto, helper

    c = helper.make_tensor("bias", TensorProto.FLOAT, [1], [bias])
    nodes = [
        helper.make_node("LabelEncoder", ["attr"], ["code"], domain="ai.onnx.ml",
                         keys_strings=list(codes), values_floats=list(codes.values()),
                         default_float=-100.0),
        helper.make_node("Add", ["x", "code"], ["s1"]),
        helper.make_node("Add", ["s1", "bias_c"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
        helper.make_node("Constant", [], ["bias_c"], value=c),
    ]
    nodes = [nodes[-1], *nodes[:-1]]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1]),
              helper.make_tensor_value_info("attr", TensorProto.STRING, [None, 1])]
    return _save(path, nodes, inputs, {"": 17, "ai.onnx.ml": 2})


def numeric_model(path: Path) -> Path:
    """prob = sigmoid(x + 2·sex01 − 1) from a [N, 2] float matrix [x, sex01]."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1], [1.0, 2.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [-1.0])
    nodes = [helper.make_node("Constant", [], ["w_c"], value=w),
             helper.make_node("Constant", [], ["b_c"], value=b),
             helper.make_node("MatMul", ["m", "w_c"], ["xw"]),
             helper.make_node("Add", ["xw", "b_c"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["prob"])]
    inputs = [helper.make_tensor_value_info("m", TensorProto.FLOAT, [None, 2])]
    return _save(path, nodes, inputs, {"": 17})


def _predictor(path: Path, features: tuple[str, ...] | None = None) -> OnnxPredictor:
    return OnnxPredictor("teacher", path, features, ReadSettings(positive_label=1))


def test_flips_on_a_string_input_worked_out_by_hand(tmp_path: Path) -> None:
    # logit = x + 2·[Male] − 1: Male decides 1 iff x ≥ −1, Female iff x ≥ 1, so a row flips
    # iff −1 ≤ x < 1, whatever its sex. x values stay off the boundaries.
    model = _predictor(string_model(tmp_path / "m.onnx", {"Male": 2.0, "Female": 0.0}, -1.0))
    x = [-2.5, -0.5, 0.5, 2.5, -1.5, 0.2, 1.5, -0.9, 0.9, 3.0]
    sex = ["Male", "Male", "Female", "Female", "Female", "Male", "Male", "Female", "Male", "Female"]
    flips = [False, True, True, False, False, True, False, True, True, False]
    batch = pa.RecordBatch.from_pydict({"x": pa.array(x), "attr": pa.array(sex)})
    res = counterfactual_flips(batch, "attr", ["Male", "Female"], lambda b: model.decide(b, 0))
    assert res.rows == 10 and res.values == ("Male", "Female")
    assert res.overall.teacher.value == pytest.approx(sum(flips) / 10, abs=1e-15)
    assert res.overall.teacher.se == pytest.approx(np.std(flips, ddof=1) / math.sqrt(10), rel=1e-12)
    # Male rows: x −2.5, −0.5, 0.2, 1.5, 0.9 → 3 flip; Female rows: 0.5, 2.5, −1.5, −0.9, 3.0 → 2
    assert res.by_value["Male"].teacher.value == pytest.approx(3 / 5)
    assert res.by_value["Female"].teacher.value == pytest.approx(2 / 5)
    assert res.transitions[("Male", "Female")].teacher.value == pytest.approx(3 / 5)
    assert res.transitions[("Female", "Male")].teacher.value == pytest.approx(2 / 5)
    assert res.overall.student is None and res.overall.delta is None


def test_flips_with_three_values_and_a_student(tmp_path: Path) -> None:
    # teacher: logit = x + code − 2 with codes A 0, B 1, C 3: decides 1 iff x ≥ 2, 1, −1
    # student: logit = x + code − 2 with codes A 0, B 0, C 0: never depends on the attribute
    teacher = _predictor(string_model(tmp_path / "t.onnx", {"A": 0.0, "B": 1.0, "C": 3.0}, -2.0))
    student = _predictor(string_model(tmp_path / "s.onnx", {"A": 0.0, "B": 0.0, "C": 0.0}, -2.0))
    x = [-2.0, 0.0, 1.5, 3.0, 0.0, 1.5, 0.0, -2.0]
    attr = ["A", "A", "A", "A", "B", "B", "C", "C"]
    # by hand, decisions at A / B / C for each x: -2 → 0/0/0, 0 → 0/0/1, 1.5 → 0/1/1, 3 → 1/1/1
    # row 0 (A, −2): no flip; row 1 (A, 0): flips to C only; row 2 (A, 1.5): flips to B and C;
    # row 3 (A, 3): none; row 4 (B, 0): flips to C; row 5 (B, 1.5): flips to A;
    # row 6 (C, 0): flips to A and B; row 7 (C, −2): none
    any_flip = [0, 1, 1, 0, 1, 1, 1, 0]
    batch = pa.RecordBatch.from_pydict({"x": pa.array(x), "attr": pa.array(attr)})
    res = counterfactual_flips(batch, "attr", ["A", "B", "C"], lambda b: teacher.decide(b, 0),
                               lambda b: student.decide(b, 0))
    assert res.overall.teacher.value == pytest.approx(5 / 8)
    assert res.overall.student is not None and res.overall.delta is not None
    assert res.overall.student.value == 0.0
    assert res.overall.delta.value == pytest.approx(-5 / 8)
    assert res.overall.delta.se == pytest.approx(np.std(any_flip, ddof=1) / math.sqrt(8), rel=1e-12)
    want_by = {"A": 2 / 4, "B": 2 / 2, "C": 1 / 2}
    assert {v: p.teacher.value for v, p in res.by_value.items()} == pytest.approx(want_by)
    want_tr = {("A", "B"): 1 / 4, ("A", "C"): 2 / 4, ("B", "A"): 1 / 2, ("B", "C"): 1 / 2,
               ("C", "A"): 1 / 2, ("C", "B"): 1 / 2}
    assert {t: p.teacher.value for t, p in res.transitions.items()} == pytest.approx(want_tr)


def test_flips_on_a_numeric_matrix_input(tmp_path: Path) -> None:
    # logit = x + 2·sex01 − 1 fed as a matrix [x, sex01]; the column holds int64 codes
    model = _predictor(numeric_model(tmp_path / "n.onnx"), ("x", "sex01"))
    x = [-2.0, -0.5, 0.5, 2.0, 0.0, 1.2]
    sex01 = [1, 0, 1, 0, 0, 1]
    batch = pa.RecordBatch.from_pydict({"x": pa.array(x), "sex01": pa.array(sex01, pa.int64())})
    res = counterfactual_flips(batch, "sex01", [0, 1], lambda b: model.decide(b, 0))
    assert res.values == ("0", "1")
    assert res.overall.teacher.value == pytest.approx(3 / 6)  # x in [−1, 1): rows 1, 2, 4
    assert res.by_value["0"].teacher.value == pytest.approx(2 / 3)
    assert res.by_value["1"].teacher.value == pytest.approx(1 / 3)


def test_flips_on_an_exported_pipeline_match_onnxruntime_directly() -> None:
    table = pq.read_table(EXAMPLE / "audit.parquet",
                          columns=["age", "hours_per_week", "sex", "race"]).slice(0, 2000)
    table = table.set_column(0, "age", table.column("age").cast(pa.float64()))
    table = table.set_column(1, "hours_per_week", table.column("hours_per_week").cast(pa.float64()))
    model = _predictor(MODELS / "pipeline_percolumn.onnx")
    res = counterfactual_flips(table, "sex", ["Male", "Female"], lambda b: model.decide(b, 0))
    session = ort.InferenceSession(str(MODELS / "pipeline_percolumn.onnx"),
                                   providers=["CPUExecutionProvider"])

    def run(sex: np.ndarray) -> np.ndarray:
        feeds = {c: table.column(c).to_numpy().astype(np.float32).reshape(-1, 1)
                 for c in ("age", "hours_per_week")}
        feeds["sex"] = sex.reshape(-1, 1)
        feeds["race"] = np.array(table.column("race").to_pylist(), dtype=object).reshape(-1, 1)
        return np.asarray(session.run(["probabilities"], feeds)[0])[:, 1] >= 0.5

    sex = np.array(table.column("sex").to_pylist(), dtype=object)
    other = np.where(sex == "Male", "Female", "Male").astype(object)
    flipped = run(sex) != run(other)
    assert res.overall.teacher.value == pytest.approx(float(flipped.mean()), abs=1e-15)
    assert res.overall.teacher.value > 0  # the fixture's sex coefficient does move decisions
    for value in ("Male", "Female"):
        assert res.by_value[value].teacher.value == pytest.approx(float(flipped[sex == value].mean()))


def test_flips_refuse_what_they_cannot_define(tmp_path: Path) -> None:
    model = _predictor(string_model(tmp_path / "m.onnx", {"Male": 2.0, "Female": 0.0}, -1.0))
    batch = pa.RecordBatch.from_pydict({"x": pa.array([0.0, 1.0, 2.0]),
                                        "attr": pa.array(["Male", "Other", "X"])})
    decide = lambda b: model.decide(b, 0)  # noqa: E731
    with pytest.raises(DataError) as err:
        counterfactual_flips(batch, "attr", ["Male", "Female"], decide)
    assert str(err.value) == ("counterfactual column 'attr': 2 sampled row(s) have values not among "
                              "the declared values (Male, Female): Other, X; declare every value "
                              "the column takes")
    with pytest.raises(DataError) as err:
        counterfactual_flips(batch, "sex", ["Male", "Female"], decide)
    assert str(err.value) == "counterfactual column 'sex' is not in the sampled rows (columns: x, attr)"
    with pytest.raises(DataError) as err:
        counterfactual_flips(batch, "attr", ["Male"], decide)
    assert str(err.value) == "counterfactual column 'attr' needs at least 2 distinct values, got ['Male']"
    nulls = pa.RecordBatch.from_pydict({"x": pa.array([0.0]), "attr": pa.array([None], pa.string())})
    with pytest.raises(DataError) as err:
        counterfactual_flips(nulls, "attr", ["Male", "Female"], decide)
    assert str(err.value) == "counterfactual column 'attr' has 1 missing value(s) in the sampled rows"
    ints = pa.RecordBatch.from_pydict({"s": pa.array([0, 1])})
    with pytest.raises(DataError) as err:
        counterfactual_flips(ints, "s", [0, "Female"], decide)
    assert str(err.value) == "counterfactual value 'Female' cannot be cast to column 's' of type int64"
