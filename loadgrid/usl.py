"""The Universal Scalability Law (Gunther), fitted to measured capacities by least squares, in plain Python.

    X(N) = λN / (1 + σ(N − 1) + κN(N − 1))

λ: the throughput of one unit; σ ≥ 0: contention (the share of the work that is serialised, queueing for a shared
resource); κ ≥ 0: coherency (the cost of keeping units in step, which makes X fall past its peak at
N* = √((1 − σ)/κ)). For fixed (σ, κ) the model is linear in λ, so the best λ is closed form:
λ = Σ X·g / Σ g² with g(N) = N / (1 + σ(N − 1) + κN(N − 1)). (σ, κ) are found by a grid search (0 and a geometric
grid from 1e-6 to 1) refined by a shrinking pattern search, minimising the sum of squared errors in X. No numpy:
a handful of points and two parameters need no more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_POINTS = 3  # three parameters: fewer sizes cannot pin the curve down
GRID = [0.0] + [10 ** (-6 + 6 * i / 48) for i in range(49)]  # 0, then 1e-6 .. 1


@dataclass(frozen=True)
class Fit:
    lam: float
    sigma: float
    kappa: float
    sse: float
    points: int

    def x(self, n: float) -> float:
        return self.lam * n / (1 + self.sigma * (n - 1) + self.kappa * n * (n - 1))

    @property
    def peak_n(self) -> float:
        """Where X(N) peaks (infinite without coherency: X then only flattens towards λ/σ)."""
        return math.sqrt((1 - self.sigma) / self.kappa) if self.kappa > 0 and self.sigma < 1 else math.inf

    @property
    def peak_x(self) -> float:
        if math.isinf(self.peak_n):
            return self.lam / self.sigma if self.sigma > 0 else math.inf
        return self.x(self.peak_n)

    def smallest_n(self, rps: float, limit: int = 4096) -> int | None:
        """The smallest whole N whose predicted X reaches `rps`; None when the model never gets there."""
        top = limit if math.isinf(self.peak_n) else min(limit, math.ceil(self.peak_n) + 1)
        return next((n for n in range(1, top + 1) if self.x(n) >= rps), None)


def _g(n: float, sigma: float, kappa: float) -> float:
    return n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def _solve(points: list[tuple[float, float]], sigma: float, kappa: float) -> tuple[float, float]:
    """(λ, sum of squared errors) for fixed σ, κ."""
    gs = [_g(n, sigma, kappa) for n, _ in points]
    lam = sum(g * x for g, (_, x) in zip(gs, points, strict=True)) / sum(g * g for g in gs)
    return lam, sum((lam * g - x) ** 2 for g, (_, x) in zip(gs, points, strict=True))


def fit(points: list[tuple[float, float]]) -> Fit:
    """Least-squares USL through (N, X) points (N > 0, at least `MIN_POINTS` distinct N)."""
    if len({n for n, _ in points}) < MIN_POINTS:
        raise ValueError(f"a USL fit needs at least {MIN_POINTS} distinct sizes")
    best = min(((s, k) for s in GRID for k in GRID), key=lambda sk: _solve(points, *sk)[1])
    sigma, kappa = best
    err = _solve(points, sigma, kappa)[1]
    step_s, step_k = max(sigma, 1e-4) / 2, max(kappa, 1e-6) / 2
    moves = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b]  # diagonals too: σ and κ trade off
    for _ in range(5000):  # pattern search: take the best move, halve the steps when none improves
        moved = False
        for a, b in moves:
            ds, dk = a * step_s, b * step_k
            s, k = max(0.0, sigma + ds), max(0.0, kappa + dk)
            e = _solve(points, s, k)[1]
            if e < err - 1e-15 * (1 + err):
                sigma, kappa, err, moved = s, k, e, True
        if not moved:
            step_s, step_k = step_s / 2, step_k / 2
            if step_s < 1e-10 and step_k < 1e-12:
                break
        else:
            step_s, step_k = step_s * 1.5, step_k * 1.5  # a move that worked: try a longer one next
    lam, err = _solve(points, sigma, kappa)
    return Fit(lam, sigma, kappa, err, len(points))
