"""Statistics on joint counts: the exact paired bootstrap, McNemar's test, Holm's correction.

Resampling N rows with replacement gives cell counts ~ Multinomial(N, observed cell
shares). Drawing B multinomials over a grouping's joint table is therefore exactly the row
bootstrap, paired between teacher and student (both read the same resampled rows), at a
cost of O(B · cells) whatever N is.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy.special import bdtr  # the binomial CDF; scipy.stats costs ~1 s to import


def rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator for one stream (one grouping), independent of the order of streams.

    crc32 of the key (not ``hash``) so the stream is the same under any PYTHONHASHSEED and on
    any machine: PCG64 and numpy's multinomial sampler are platform independent.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))


def resample_cells(cells: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` bootstrap copies of joint ``cells[G, 2, 2, 2]``: shape [B, G, 2, 2, 2].

    Each copy has the same total N as ``cells``: group sizes vary between copies, as they
    do when rows are resampled. Cells that are empty stay empty.
    """
    flat = cells.reshape(-1).astype(np.int64)
    n = int(flat.sum())
    if n == 0 or resamples == 0:
        return np.zeros((resamples, *cells.shape), dtype=np.int64)
    draws = rng.multinomial(n, flat / n, size=resamples)
    return draws.reshape(resamples, *cells.shape)


@dataclass(frozen=True)
class Interval:
    """A two-sided interval, the share of resamples in which the value was defined, and
    the standard error of the estimate (for power: the change detected 80% of the time)."""

    lo: float
    hi: float
    defined: float  # share of resamples where the value was defined
    se: float = math.nan

    def as_list(self) -> list[float]:
        return [self.lo, self.hi]


def percentile_interval(samples: np.ndarray, confidence: float) -> Interval | None:
    """Percentile interval over the defined resamples; None if none is defined.

    Undefined resamples (a group drew no positives: NaN; never inf, but it would count as
    undefined too) are not dropped silently: the share of defined ones travels with the
    interval, and the gate refuses intervals that rest on too few of them.
    """
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    defined = np.isfinite(samples)
    share = float(defined.mean()) if samples.size else 0.0
    if not defined.any():
        return None
    tail = (1.0 - confidence) / 2.0
    kept = samples[defined]
    lo, hi = np.quantile(kept, [tail, 1.0 - tail])
    return Interval(float(lo), float(hi), share, float(kept.std()) if kept.size > 1 else math.nan)


def mcnemar_exact(worse: int, better: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    ``worse``: rows the teacher got right and the student wrong; ``better``: the reverse.
    Under H0 (same accuracy) ``worse ~ Binomial(worse + better, 1/2)``, a symmetric law, so
    the two-sided p-value is twice the smaller tail, capped at 1 (statsmodels' ``exact``).
    """
    if worse < 0 or better < 0:
        raise ValueError(f"discordant counts must be >= 0, got {worse} and {better}")
    n = worse + better
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * bdtr(min(worse, better), n, 0.5)))


def mcnemar_exact_many(worse: np.ndarray, better: np.ndarray) -> np.ndarray:
    """:func:`mcnemar_exact` of many groups at once: the same ufunc, so the same values,
    without a Python call per group (a grouping may have 100,000 groups)."""
    worse, better = np.asarray(worse, np.int64), np.asarray(better, np.int64)
    if (worse < 0).any() or (better < 0).any():
        raise ValueError("discordant counts must be >= 0")
    n = worse + better
    p = np.minimum(1.0, 2.0 * bdtr(np.minimum(worse, better), np.maximum(n, 1), 0.5))
    return np.where(n == 0, 1.0, p)


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    A NaN p-value (an undefined test) stays NaN and still counts in m, so it can only make
    the others more conservative, never less.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (math.isnan(pvalues[i]), pvalues[i]))
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        if math.isnan(pvalues[i]):
            break  # NaNs sort last
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
