"""Individual fairness of teacher and student on a bounded, deterministic sample of rows.

Group metrics come from counts; individual fairness compares *rows with each other*, which
no count table holds. So the engine keeps a sample of at most S rows during its one pass
(:class:`RowSampler`) and three pure measures run on it:

- :func:`lipschitz`: the Lipschitz-style measure of Mohammadshahi & Ioannou (TMLR 2025),
  ``I(f) = E over pairs [|f(x) − f(x')| / d(x, x')]`` on positive-class probabilities,
  over P seeded random pairs, with a standard error that covers both the pair sampling
  and the row sampling;
- :func:`knn_consistency`: Zemel et al. (2013), ``1 − mean_i |ŷ_i − mean ŷ of the k nearest
  neighbours of i|`` on decisions, for Q query rows against the sampled rows;
- :func:`counterfactual_flips`: the share of rows whose decision changes when only a
  sensitive model input is set to each other declared value.

Distance (:func:`embed`): numeric features are centred and divided by their standard
deviation on the sample (ddof 0), so each contributes ``((x_j − x'_j) / σ_j)²`` to d²; a
feature that is constant on the sample carries no information and is dropped (and named).
Categorical (string) features are one-hot encoded and scaled by 1/√2, so a mismatch adds
exactly 1 to d², the same as a numeric difference of one standard deviation; equal values
add 0. Missing values are an error, never a silent 0.

Every estimate is teacher, student and their paired change (student − teacher) on the
*same* pairs, queries or rows, so the paired standard error is small when both models
behave alike; a NaN value is undefined and carries its reason. Standard errors treat the
sampled rows as drawn from the population the audit set stands for, as the row bootstrap
of the count metrics does.

Why the defaults are enough (figures from benchmarks/bench_individual.py): with S = 20,000
rows and P = 200,000 pairs (10 a row), I(f)'s variance is dominated by the rows, not the
pairs (pair part 0.00005 vs row part 0.00017 on the 1M-row benchmark, 0.00021 vs 0.00073
on Adult), so more pairs would barely help; its 95 % relative error was 1.1–1.5 %. Q = 5,000
kNN queries give a standard error of 0.003–0.005, and a flip rate over S rows has one of at
most 0.5/√S = 0.0035. The cost is bounded by S, P and Q, not by the audit set's size.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairgate.errors import DataError

DEFAULT_SAMPLE_ROWS = 20_000
DEFAULT_PAIRS = 200_000
DEFAULT_QUERIES = 5_000
DEFAULT_K = 5
_CHUNK = 65_536  # pairs per distance chunk: bounds temporary memory to a few MB

Decide = Callable[[pa.RecordBatch], np.ndarray]

# ----------------------------------------------------------------------------- sampling

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _mix_int(x: int) -> int:
    """splitmix64's finalizer on a Python int (no numpy scalar overflow warnings)."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * _M1) & _MASK
    x = ((x ^ (x >> 27)) * _M2) & _MASK
    return x ^ (x >> 31)


def row_hash(seed: int, rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (seed, row identity): splitmix64 of ``key(seed) + row · φ``.

    A function of the row's identity only (a global index, or the engine's hash of the row's
    values, :mod:`fairgate.engine.identity`), so the rows it selects do not depend on batch
    sizes, batch order or partitioning, and it is the same on every machine.
    """
    x = np.asarray(rows).astype(np.uint64) * np.uint64(_GOLDEN) + np.uint64(_mix_int(seed))
    x ^= x >> np.uint64(30)
    x *= np.uint64(_M1)
    x ^= x >> np.uint64(27)
    x *= np.uint64(_M2)
    x ^= x >> np.uint64(31)
    return x


@dataclass(frozen=True)
class SampledRows:
    """The kept rows by increasing identity: input columns, per-row extras, how many were seen."""

    rows: np.ndarray  # row identities, increasing (uint64; global indices when offsets were given)
    table: pa.Table
    extra: dict[str, np.ndarray]
    seen: int
    size: int  # the sample size asked for

    def batch(self) -> pa.RecordBatch:
        """The rows as one record batch, as a model's ``decide`` reads them."""
        table = self.table.combine_chunks()
        batches = table.to_batches()
        if not batches:
            return pa.RecordBatch.from_pylist([], schema=table.schema)
        return batches[0]


class RowSampler:
    """Keeps the S rows with the smallest ``row_hash(seed, row)``: a bottom-S hash sample.

    Why this and not Algorithm R: Algorithm R's kept set depends on how many random draws
    came before a row, so it changes with batch sizes and cannot be split across
    partitions; a hash of the row's identity gives byte-identical samples for any
    batching, and bottom-S samples of partitions merge exactly (:meth:`merge`: the bottom S
    of their union). It is a uniform sample without replacement of min(S, N) rows, and,
    unlike a fixed hash threshold, its size does not depend on N, which the engine does not
    know in advance. Cost: one hash per row; a row is copied only if its hash is below the
    S-th smallest seen at the last compaction (O(S·log(N/S)) rows in all).
    """

    def __init__(self, size: int, seed: int, columns: Sequence[str] | None = None) -> None:
        if size < 1:
            raise ValueError(f"sample size must be >= 1, got {size}")
        self.size = size
        self.seed = seed
        self.columns = None if columns is None else list(columns)
        self.seen = 0
        self._extra_names: tuple[str, ...] | None = None
        self._parts: list[tuple[np.ndarray, np.ndarray, pa.RecordBatch, dict[str, np.ndarray]]] = []
        self._stored = 0
        self._threshold: np.uint64 | None = None  # largest kept hash once S rows are kept

    def add(self, batch: pa.RecordBatch, rows: int | np.ndarray,
            extra: Mapping[str, np.ndarray] | None = None) -> None:
        """Offer a batch's rows: ``rows`` is their identities (one uint64 a row), or the
        global index of the first, the others following it."""
        n = batch.num_rows
        extra = dict(extra or {})
        if self._extra_names is None:
            self._extra_names = tuple(extra)
        elif tuple(extra) != self._extra_names:
            raise ValueError(f"extra columns {tuple(extra)} differ from the first batch's "
                             f"{self._extra_names}")
        for name, arr in extra.items():
            if len(arr) != n:
                raise ValueError(f"extra column {name!r} has {len(arr)} values for {n} rows")
        self.seen += n
        if n == 0:
            return
        if isinstance(rows, int | np.integer):
            ids = np.arange(int(rows), int(rows) + n, dtype=np.uint64)
        else:
            ids = np.asarray(rows, dtype=np.uint64)
            if len(ids) != n:
                raise ValueError(f"{len(ids)} row identities for {n} rows")
        hashes = row_hash(self.seed, ids)
        if self._threshold is not None:
            keep = np.flatnonzero(hashes <= self._threshold)
            if keep.size == 0:
                return
            ids, hashes = ids[keep], hashes[keep]
        else:
            keep = None
        if self.columns is not None:
            batch = batch.select(self.columns)
        if keep is not None:
            batch = batch.take(pa.array(keep))
            extra = {k: np.asarray(v)[keep] for k, v in extra.items()}
        self._parts.append((hashes, ids, batch, {k: np.asarray(v) for k, v in extra.items()}))
        self._stored += len(ids)
        if self._stored >= 2 * self.size:
            self._compact()

    def merge(self, other: RowSampler) -> None:
        """Take in another sampler's rows (of other rows, same size and seed): the result is
        the bottom S of the union, whatever was added where."""
        if (other.size, other.seed, other.columns) != (self.size, self.seed, self.columns):
            raise ValueError("samplers of different size, seed or columns do not merge")
        if other._extra_names is not None:
            if self._extra_names is None:
                self._extra_names = other._extra_names
            elif other._extra_names != self._extra_names:
                raise ValueError(f"extra columns {other._extra_names} differ from "
                                 f"{self._extra_names}")
        self.seen += other.seen
        self._parts += other._parts
        self._stored += other._stored
        if other._threshold is not None and (self._threshold is None
                                             or other._threshold < self._threshold):
            self._threshold = other._threshold
        if self._parts and self._stored >= self.size:
            self._compact()

    def _compact(self) -> None:
        hashes = np.concatenate([p[0] for p in self._parts])
        rows = np.concatenate([p[1] for p in self._parts])
        table = pa.Table.from_batches([p[2] for p in self._parts])
        extra = {k: np.concatenate([p[3][k] for p in self._parts]) for k in self._parts[0][3]}
        order = np.lexsort((*_ties(extra), rows, hashes))[: self.size]
        if len(order) == self.size:
            self._threshold = hashes[order[-1]]
        batch = table.take(pa.array(order)).combine_chunks().to_batches()[0]  # parts hold rows
        self._parts = [(hashes[order], rows[order], batch, {k: v[order] for k, v in extra.items()})]
        self._stored = len(order)

    def result(self) -> SampledRows:
        """The sample by increasing identity (the same bytes for any batching)."""
        if not self._parts:
            empty = pa.table({}) if self.columns is None else pa.table(
                {c: pa.array([], pa.null()) for c in self.columns})
            return SampledRows(np.zeros(0, np.uint64), empty, {}, self.seen, self.size)
        self._compact()
        _, rows, batch, extra = self._parts[0]
        order = np.lexsort((*_ties(extra), rows))
        table = pa.Table.from_batches([batch]).take(pa.array(order)).combine_chunks()
        return SampledRows(rows[order], table, {k: v[order] for k, v in extra.items()},
                           self.seen, self.size)


def _ties(extra: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Sort keys after the identity: equal rows (one identity) that a batch-coupled model
    scored differently are kept and ordered by their scores, whoever read them first."""
    return [np.asarray(extra[k]) for k in sorted(extra, reverse=True)]


def _rng(seed: int, stream: str) -> np.random.Generator:
    """One independent, platform-stable stream per measure (crc32, not ``hash``)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]))


# ----------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """A sample mean and its standard error; ``value`` NaN means undefined (see ``reason``)."""

    value: float
    se: float
    n: int  # sampling units behind it: pairs, queries or rows
    reason: str | None = None

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Normal interval value ± z·se (NaN when undefined)."""
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        return (self.value - z * self.se, self.value + z * self.se)

    def relative_error(self, confidence: float = 0.95) -> float:
        """Half-width of the interval over |value|: the estimate's relative error at that level."""
        if not math.isfinite(self.value) or self.value == 0:
            return math.nan
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        return z * self.se / abs(self.value)


def _undefined(reason: str, n: int = 0) -> Estimate:
    return Estimate(math.nan, math.nan, n, reason)


@dataclass(frozen=True)
class Paired:
    """Teacher, student and student − teacher on the same sampling units."""

    teacher: Estimate
    student: Estimate | None = None
    delta: Estimate | None = None


def _paired(estimates: list[Estimate]) -> Paired:
    if len(estimates) == 1:
        return Paired(estimates[0])
    t, s, d = estimates
    if t.reason or s.reason:
        reasons = [f"{who}: {e.reason}" for who, e in (("teacher", t), ("student", s)) if e.reason]
        d = _undefined("; ".join(reasons), d.n)
    return Paired(t, s, d)


def _terms_estimate(terms: np.ndarray, reason_if_empty: str) -> Estimate:
    """Mean of i.i.d. per-unit terms and its standard error sd/√n."""
    n = len(terms)
    if n == 0:
        return _undefined(reason_if_empty)
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Estimate(value, se, n)


# ----------------------------------------------------------------------------- distance


@dataclass(frozen=True)
class Embedding:
    """Rows as points whose Euclidean distance is the standardized distance d."""

    matrix: np.ndarray  # [n, width] float64
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    constant: tuple[str, ...]  # dropped: no variation on the sample
    scale: dict[str, float] = field(default_factory=dict)  # σ of each numeric feature


def _values(data: pa.Table | Mapping[str, Any], name: str) -> np.ndarray:
    if isinstance(data, pa.Table | pa.RecordBatch):
        if name not in data.schema.names:
            raise DataError(f"individual fairness feature {name!r} is not in the sampled rows "
                            f"(columns: {', '.join(data.schema.names)})")
        col: Any = data.column(name)
    else:
        if name not in data:
            raise DataError(f"individual fairness feature {name!r} is not in the sampled rows "
                            f"(columns: {', '.join(data)})")
        col = data[name]
    if isinstance(col, pa.ChunkedArray | pa.Array):
        if col.null_count:
            raise DataError(f"individual fairness feature {name!r} has {col.null_count} missing "
                            "value(s) in the sampled rows")
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return np.asarray(col.to_numpy(zero_copy_only=False))
    return np.asarray(col)


def embed(data: pa.Table | Mapping[str, Any], features: Sequence[str],
          categorical: Collection[str] = ()) -> Embedding:
    """Standardize numeric features on the sample and one-hot categorical ones (see module doc).

    ``categorical`` forces columns with numeric codes to be compared as categories.
    """
    if not features:
        raise DataError("individual fairness needs at least one feature for the distance")
    blocks: list[np.ndarray] = []
    numeric: list[str] = []
    cats: list[str] = []
    constant: list[str] = []
    scale: dict[str, float] = {}
    for name in dict.fromkeys(features):
        arr = _values(data, name)
        if arr.dtype.kind in "biuf" and name not in categorical:
            x = arr.astype(np.float64)
            bad = ~np.isfinite(x)
            if bad.any():
                raise DataError(f"individual fairness feature {name!r} has {int(bad.sum())} missing "
                                "or non-finite value(s) in the sampled rows")
            sd = float(x.std()) if len(x) else 0.0
            if not sd > 0:
                constant.append(name)
                continue
            numeric.append(name)
            scale[name] = sd
            blocks.append(((x - x.mean()) / sd)[:, None])
            continue
        values = np.asarray([None if v is None else str(v) for v in arr.tolist()], dtype=object)
        missing = np.asarray([v is None for v in values], dtype=bool)
        if missing.any():
            raise DataError(f"individual fairness feature {name!r} has {int(missing.sum())} "
                            "missing value(s) in the sampled rows")
        levels, codes = np.unique(values.astype(str), return_inverse=True)
        if len(levels) < 2:
            constant.append(name)
            continue
        cats.append(name)
        onehot = np.zeros((len(values), len(levels)))
        onehot[np.arange(len(values)), codes] = math.sqrt(0.5)
        blocks.append(onehot)
    n = len(_values(data, features[0]))
    matrix = np.hstack(blocks) if blocks else np.zeros((n, 0))
    return Embedding(np.ascontiguousarray(matrix), tuple(numeric), tuple(cats), tuple(constant), scale)


def _matrix(z: Embedding | np.ndarray) -> np.ndarray:
    m = z.matrix if isinstance(z, Embedding) else np.asarray(z, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix [rows, width], got shape {m.shape}")
    return m


def _models(n: int, teacher: np.ndarray, student: np.ndarray | None, what: str) -> np.ndarray:
    arrays = [teacher] if student is None else [teacher, student]
    out = []
    for role, arr in zip(("teacher", "student"), arrays, strict=False):
        a = np.asarray(arr, dtype=np.float64).reshape(-1)
        if len(a) != n:
            raise ValueError(f"{role} {what} have {len(a)} values for {n} rows")
        if not np.isfinite(a).all():
            raise DataError(f"{role} {what} have non-finite values in the sampled rows")
        out.append(a)
    return np.stack(out, axis=1)


# ----------------------------------------------------------------------------- (a) Lipschitz


@dataclass(frozen=True)
class Lipschitz:
    """I(f) of teacher and student on the same pairs, and what went into it."""

    paired: Paired
    rows: int
    pairs_drawn: int
    pairs_used: int  # pairs with d > 0
    exact: bool  # every pair of the sampled rows was used (no pair-sampling error)
    zero_distance_pairs: int  # excluded: d = 0 makes the ratio undefined
    zero_distance_conflicts: tuple[int, ...]  # of those, pairs whose scores differ (per model)
    se_pairs: tuple[float, ...]  # per model: the pair-sampling part of the standard error
    se_rows: tuple[float, ...]  # per model: the row-sampling part


def _pairs(n: int, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    total = n * (n - 1) // 2
    if total <= pairs:
        i, j = np.triu_indices(n, 1)
        return i.astype(np.int64), j.astype(np.int64), True
    rng = _rng(seed, "individual_lipschitz")
    i = rng.integers(0, n, size=pairs, dtype=np.int64)
    j = rng.integers(0, n - 1, size=pairs, dtype=np.int64)
    j += j >= i  # uniform over ordered pairs with i != j
    return i, j, False


def _distances(m: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    out = np.empty(len(i))
    for start in range(0, len(i), _CHUNK):
        diff = m[i[start:start + _CHUNK]] - m[j[start:start + _CHUNK]]
        out[start:start + _CHUNK] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def _pair_mean(h: np.ndarray, i: np.ndarray, j: np.ndarray, n: int,
               exact: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of a pair statistic over the drawn pairs, and its two error parts (per column).

    With rows X_1..X_n drawn from the audit set and P pairs drawn among them, the mean has
    variance Var(U_n) + σ²/P (Hoeffding's decomposition of the U-statistic U_n over all
    pairs of the rows): Var(U_n) = (4(n−2)ζ₁ + 2σ²)/(n(n−1)), σ² = Var h and
    ζ₁ = Var E[h(X, X') | X]. σ² is the sample variance of h; ζ₁ comes from each row's mean
    over its m_r pairs, whose variance is ζ₁ + (σ² − ζ₁)/m_r. ζ₁ ≤ σ²/2 always, and that
    ceiling is used when rows have too few pairs to estimate it (conservative).
    """
    p = len(h)
    mean = h.mean(axis=0)
    var = h.var(axis=0, ddof=1)
    m_r = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    has = m_r > 0
    c = float(np.mean(1.0 / m_r[has]))
    zeta1 = np.empty(h.shape[1])
    for col in range(h.shape[1]):
        s_r = (np.bincount(i, weights=h[:, col], minlength=n)
               + np.bincount(j, weights=h[:, col], minlength=n))
        a = float(np.mean((s_r[has] / m_r[has] - mean[col]) ** 2))
        ceiling = var[col] / 2
        zeta1[col] = ceiling if c > 0.9 else min(max((a - var[col] * c) / (1 - c), 0.0), ceiling)
    se_rows = np.sqrt((4 * (n - 2) * zeta1 + 2 * var) / (n * (n - 1)))
    se_pairs = np.zeros_like(var) if exact else np.sqrt(var / p)
    return mean, se_pairs, se_rows


def lipschitz(z: Embedding | np.ndarray, teacher: np.ndarray, student: np.ndarray | None = None,
              *, pairs: int = DEFAULT_PAIRS, seed: int = 0) -> Lipschitz:
    """I(f) = mean over pairs of |f(x) − f(x')| / d(x, x') on positive-class scores.

    If the n sampled rows have at most ``pairs`` pairs, all n(n−1)/2 are used (exact on the
    sample); otherwise ``pairs`` ordered pairs i ≠ j are drawn independently (seeded).
    Pairs at distance 0 are excluded and counted; those among them whose scores differ
    (an infinite ratio: same features, different treatment, e.g. through an attribute left
    out of the distance) are counted per model, so a report can show them. The standard
    error covers pair sampling and row sampling, with the rows taken as drawn from the
    population the audit set stands for (no finite-population correction), as the row
    bootstrap of the count metrics does.
    """
    m = _matrix(z)
    n = len(m)
    f = _models(n, teacher, student, "scores")
    k = f.shape[1]
    if pairs < 2:
        raise ValueError(f"pairs must be >= 2, got {pairs}")
    if n < 2:
        reason = f"needs at least 2 sampled rows, got {n}"
        return Lipschitz(_paired([_undefined(reason)] * (1 if k == 1 else 3)), n, 0, 0, False, 0,
                         (0,) * k, (math.nan,) * k, (math.nan,) * k)
    i, j, exact = _pairs(n, pairs, seed)
    d = _distances(m, i, j)
    diff = np.abs(f[i] - f[j])
    zero = d == 0
    conflicts = tuple(int(np.count_nonzero(zero & (diff[:, c] > 0))) for c in range(k))
    used = ~zero
    i_u, j_u = i[used], j[used]
    h = diff[used] / d[used, None]
    drawn, n_used = len(i), int(used.sum())
    if n_used < 2:
        reason = (f"{n_used} of {drawn} sampled pairs have a positive distance "
                  f"(the features do not tell the {n} sampled rows apart)")
        return Lipschitz(_paired([_undefined(reason, n_used)] * (1 if k == 1 else 3)), n, drawn,
                         n_used, exact, int(zero.sum()), conflicts, (math.nan,) * k, (math.nan,) * k)
    cols = h if k == 1 else np.column_stack([h, h[:, 1] - h[:, 0]])
    mean, se_p, se_r = _pair_mean(cols, i_u, j_u, n, exact)
    se = np.sqrt(se_p**2 + se_r**2)
    ests = [Estimate(float(mean[c]), float(se[c]), n_used) for c in range(cols.shape[1])]
    return Lipschitz(_paired(ests), n, drawn, n_used, exact, int(zero.sum()), conflicts,
                     tuple(float(x) for x in se_p[:k]), tuple(float(x) for x in se_r[:k]))


# ----------------------------------------------------------------------------- (b) kNN consistency


@dataclass(frozen=True)
class KnnConsistency:
    """Zemel's consistency of teacher and student decisions with the same neighbours."""

    paired: Paired
    k: int
    queries: int
    reference: int  # rows searched for neighbours (the sampled rows)


def nearest_neighbours(m: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices [Q, k] of each query row's k nearest other rows of ``m`` (itself excluded).

    Asks for k+1 and drops the query's own index; if it is not among them (more than k
    rows at distance 0), the farthest of the k+1 is dropped instead. Ties at the k-th
    distance are broken by the search (scikit-learn's order).
    """
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(m)
    idx = nn.kneighbors(m[queries], return_distance=False)
    drop = idx == queries[:, None]  # at most one True a row: indices are distinct
    drop[~drop.any(axis=1), -1] = True
    return idx[~drop].reshape(len(queries), k)


def knn_consistency(z: Embedding | np.ndarray, teacher: np.ndarray, student: np.ndarray | None = None,
                    *, k: int = DEFAULT_K, queries: int = DEFAULT_QUERIES,
                    seed: int = 0) -> KnnConsistency:
    """1 − mean over query rows of |ŷ_i − mean ŷ over its k nearest neighbours|, on decisions.

    Neighbours are searched among all n sampled rows (the bounded reference); the queries
    are ``queries`` of those rows drawn without replacement (seeded), or all n if n ≤
    ``queries``. So the value is the consistency at reference size n: a smaller reference
    has sparser neighbourhoods. On 1M rows of 19 independent features a 20,000-row
    reference gave values 0.014 (teacher) and 0.023 (student) below the full-reference ones
    and a change 0.009 lower (benchmarks/bench_individual.py); keep ``sample_rows`` fixed
    between runs whose values are compared. The standard error is the delete-one-row jackknife over
    the n rows, which removes a row both as a query and as a neighbour (its place goes to
    the query's (k+1)-th neighbour), so it covers query sampling and the randomness of the
    reference; by the Efron–Stein inequality it errs on the large side. Query sampling
    alone is within √(ln(2/δ)/(2Q)) with probability 1 − δ (Hoeffding: terms lie in [0, 1]).
    """
    m = _matrix(z)
    n = len(m)
    y = _models(n, teacher, student, "decisions")
    nmod = y.shape[1]
    if k < 1 or queries < 2:
        raise ValueError(f"k must be >= 1 and queries >= 2, got k={k}, queries={queries}")
    reason = None
    if n < k + 2:
        reason = f"needs at least k + 2 = {k + 2} sampled rows, got {n}"
    elif m.shape[1] == 0:
        reason = "no feature varies on the sampled rows: every row is every row's neighbour"
    if reason is not None:
        return KnnConsistency(_paired([_undefined(reason)] * (1 if nmod == 1 else 3)), k, 0, n)
    if queries >= n:
        q = np.arange(n)
    else:
        q = np.sort(_rng(seed, "knn_consistency").choice(n, size=queries, replace=False))
    nbrs = nearest_neighbours(m, q, k + 1)
    near, spare = nbrs[:, :k], nbrs[:, k]
    yq = y[q]  # [Q, models]
    mean_nb = y[near].mean(axis=1)
    gaps = np.abs(yq - mean_nb)  # [Q, models]
    # the gap of query i when its neighbour at position p is deleted (spare takes its place)
    replaced = np.abs(yq[:, None, :] - (mean_nb[:, None, :] + (y[spare][:, None, :] - y[near]) / k))
    moved = replaced - gaps[:, None, :]  # [Q, k, models]
    qn = len(q)
    theta = 1.0 - gaps.mean(axis=0)
    is_query = np.zeros(n)
    is_query[q] = 1.0
    deleted = np.empty((n, nmod))
    for c in range(nmod):
        own = np.zeros(n)
        own[q] = gaps[:, c]
        change = np.bincount(near.ravel(), weights=moved[:, :, c].ravel(), minlength=n)
        deleted[:, c] = 1.0 - (gaps[:, c].sum() + change - own) / (qn - is_query)
    if nmod == 2:
        theta = np.append(theta, theta[1] - theta[0])
        deleted = np.column_stack([deleted, deleted[:, 1] - deleted[:, 0]])
    jack = (n - 1) / n * ((deleted - deleted.mean(axis=0)) ** 2).sum(axis=0)
    ests = [Estimate(float(theta[c]), float(np.sqrt(jack[c])), qn) for c in range(len(theta))]
    return KnnConsistency(_paired(ests), k, qn, n)


# ----------------------------------------------------------------------------- (c) counterfactual flips


@dataclass(frozen=True)
class CounterfactualFlips:
    """Share of rows whose decision changes when only ``column`` is set to another value."""

    column: str
    values: tuple[str, ...]
    overall: Paired  # a row flips if any other value changes its decision
    by_value: dict[str, Paired]  # rows whose original value is the key
    transitions: dict[tuple[str, str], Paired]  # (original, counterfactual) value
    rows: int


def _with_column(batch: pa.RecordBatch, column: str, value: pa.Scalar) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(column)
    const = pa.repeat(value, batch.num_rows)
    return batch.set_column(idx, batch.schema.field(idx), const)


def _decisions(decide: Decide, batch: pa.RecordBatch, role: str) -> np.ndarray:
    out = np.asarray(decide(batch)).reshape(-1)
    if len(out) != batch.num_rows:
        raise ValueError(f"{role} decided {len(out)} rows for a batch of {batch.num_rows}")
    return out.astype(bool)


def counterfactual_flips(batch: pa.RecordBatch | pa.Table, column: str, values: Sequence[object],
                         teacher: Decide, student: Decide | None = None) -> CounterfactualFlips:
    """Decide every row as it is and with ``column`` set to each other declared value.

    The models read the whole batch, so only that one input changes. Every row's value
    must be among ``values`` (a value the policy did not declare has no defined
    counterfactual: fail, naming it). The standard errors are binomial over the sampled
    rows; the changes (student − teacher) are paired per row.
    """
    batch, col = _sampled_column(batch, column, "counterfactual column")
    typ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if pa.types.is_dictionary(col.type):
        batch = _with_array(batch, column, col.cast(typ))
        col = batch.column(column)
    scalars: list[pa.Scalar] = []
    for v in values:
        try:
            scalars.append(pa.scalar(v).cast(typ))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise DataError(f"counterfactual value {v!r} cannot be cast to column {column!r} "
                            f"of type {typ}") from None
    labels = [str(s.as_py()) for s in scalars]
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise DataError(f"counterfactual column {column!r} needs at least 2 distinct values, "
                        f"got {list(values)!r}")
    original = np.full(batch.num_rows, -1, dtype=np.int64)
    for code, s in enumerate(scalars):
        eq = pc.equal(col, s).to_numpy(zero_copy_only=False)
        original[eq] = code
    unknown = np.flatnonzero(original < 0)
    if unknown.size:
        seen = sorted({str(v) for v in col.take(pa.array(unknown[:1000])).to_pylist()})
        raise DataError(
            f"counterfactual column {column!r}: {unknown.size} sampled row(s) have values not "
            f"among the declared values ({', '.join(labels)}): {', '.join(seen[:10])}; declare "
            "every value the column takes"
        )
    deciders = [("teacher", teacher)] + ([("student", student)] if student is not None else [])
    n = batch.num_rows
    flips = np.zeros((len(deciders), len(scalars), n), dtype=bool)  # [model, counterfactual, row]
    for mi, (role, decide) in enumerate(deciders):
        base = _decisions(decide, batch, role)
        for vi, s in enumerate(scalars):
            rows = np.flatnonzero(original != vi)
            if rows.size == 0:
                continue
            changed = _with_column(batch.take(pa.array(rows)), column, s)
            flips[mi, vi, rows] = _decisions(decide, changed, role) != base[rows]

    def paired(mask: np.ndarray, per_row: np.ndarray, what: str) -> Paired:
        terms = [per_row[mi, mask].astype(np.float64) for mi in range(len(deciders))]
        reason = f"no sampled row {what}"
        ests = [_terms_estimate(t, reason) for t in terms]
        if len(terms) == 2:
            ests.append(_terms_estimate(terms[1] - terms[0], reason))
        return _paired(ests)

    any_flip = np.asarray(flips.any(axis=1))  # [model, row]
    everyone = np.ones(n, dtype=bool)
    by_value = {lab: paired(original == a, any_flip, f"has {column} = {lab}")
                for a, lab in enumerate(labels)}
    transitions = {
        (labels[a], labels[b]): paired(original == a, flips[:, b, :], f"has {column} = {labels[a]}")
        for a in range(len(labels)) for b in range(len(labels)) if a != b
    }
    return CounterfactualFlips(column, tuple(labels), paired(everyone, any_flip, "at all"),
                               by_value, transitions, n)


def _with_array(batch: pa.RecordBatch, column: str, array: pa.Array) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(column)
    return batch.set_column(idx, pa.field(column, array.type), array)


@dataclass(frozen=True)
class TextFlips:
    """Share of rows whose decision changes when sensitive terms in a text are swapped."""

    column: str
    rows: int  # sampled rows
    rows_with_terms: int  # sampled rows holding at least one term
    overall: Paired  # over rows with a term: a row flips if any substitution changes it
    by_substitution: dict[str, tuple[int, Paired]]  # "a → b": (rows holding a, flip rate)


class Rewrite(Protocol):
    """One substitution (fairgate/inputs/text_swap.py): its label, where it applies, how."""

    @property
    def label(self) -> str: ...

    @property
    def source(self) -> str: ...

    def found(self, text: str) -> bool: ...

    def apply(self, text: str) -> str: ...


def text_counterfactual_flips(batch: pa.RecordBatch | pa.Table, column: str,
                              rewrites: Sequence[Rewrite], teacher: Decide,
                              student: Decide | None = None) -> TextFlips:
    """Decide every row as it is and, for each substitution ``a → b``, the rows holding
    ``a`` with it replaced (only that column changes). A substitution's flip rate is over
    the rows holding ``a``; the overall rate over the rows holding any term, a row flipping
    if any of its substitutions changes its decision. Rows without a term cannot flip and
    are not counted: a sample without any term is undefined, never a pass."""
    batch, col = _sampled_column(batch, column, "counterfactual text column")
    texts = [str(t) for t in col.to_pylist()]
    typ = col.type
    deciders = [("teacher", teacher)] + ([("student", student)] if student is not None else [])
    n = batch.num_rows
    holds = np.zeros((len(rewrites), n), dtype=bool)
    flips = np.zeros((len(deciders), len(rewrites), n), dtype=bool)  # [model, rewrite, row]
    changed = []
    for ri, r in enumerate(rewrites):
        rows = np.array([i for i, t in enumerate(texts) if r.found(t)], dtype=np.int64)
        holds[ri, rows] = True
        new = pa.array([r.apply(texts[i]) for i in rows], type=typ)
        changed.append((rows, _with_array(batch.take(pa.array(rows)), column, new)
                        if rows.size else None))
    for mi, (role, decide) in enumerate(deciders):
        base = _decisions(decide, batch, role)
        for ri, (rows, probe) in enumerate(changed):
            if probe is not None:
                flips[mi, ri, rows] = _decisions(decide, probe, role) != base[rows]

    def paired(mask: np.ndarray, per_row: np.ndarray, what: str) -> Paired:
        terms = [per_row[mi, mask].astype(np.float64) for mi in range(len(deciders))]
        ests = [_terms_estimate(t, f"no sampled row {what}") for t in terms]
        if len(terms) == 2:
            ests.append(_terms_estimate(terms[1] - terms[0], f"no sampled row {what}"))
        return _paired(ests)

    any_term = np.asarray(holds.any(axis=0))
    overall = paired(any_term, np.asarray(flips.any(axis=1)), f"of {column} holds a term to swap")
    by = {r.label: (int(holds[ri].sum()), paired(holds[ri], flips[:, ri, :],
                                                 f"of {column} holds {r.source!r}"))
          for ri, r in enumerate(rewrites)}
    return TextFlips(column, n, int(any_term.sum()), overall, by)


def _sampled_column(batch: pa.RecordBatch | pa.Table, column: str,
                    what: str) -> tuple[pa.RecordBatch, pa.Array]:
    """The sample as one record batch and its ``column``, which must be there without nulls."""
    if isinstance(batch, pa.Table):
        table = batch.combine_chunks()
        batches = table.to_batches()
        batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
    if column not in batch.schema.names:
        raise DataError(f"{what} {column!r} is not in the sampled rows "
                        f"(columns: {', '.join(batch.schema.names)})")
    col = batch.column(column)
    if col.null_count:
        raise DataError(f"{what} {column!r} has {col.null_count} missing value(s) in the "
                        "sampled rows")
    return batch, col
