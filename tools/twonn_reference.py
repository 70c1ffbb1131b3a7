#!/usr/bin/env python3
"""Writes tests/fixtures/twonn_reference.json: TwoNN reference values for peft/twonn.cpp.

scikit-dimension (skdim) cannot be installed here, so this script re-implements the formula of
skdim.id.TwoNN (scikit-learn-contrib/scikit-dimension@011984c, skdim/id/_TwoNN.py) with numpy only:
  r1, r2 = 1st and 2nd smallest off-diagonal Euclidean distances of each row (a sorted distance row
  minus its self-distance 0), mu = r2 / r1, keep the K = int(N * (1 - f)) smallest mu,
  x = log(mu), y = -log(1 - arange(K) / N), d = sum(x * y) / sum(x * x)
  (what LinearRegression(fit_intercept=False) fits).
skdim fails on duplicate rows (r1 = 0, infinite mu); rankforge keeps the first copy of each distinct
row, so the "duplicates" case here is computed on np.unique's distinct rows, in first-occurrence order.

Usage: python3 tools/twonn_reference.py [output.json]   (any python3 with numpy, e.g. /usr/bin/python3; deterministic)
"""
import json
import sys

import numpy as np


def twonn(points, f):
    n = len(points)
    diff = points[:, None, :] - points[None, :, :]
    dist = np.sqrt((diff * diff).sum(axis=2))  # (n, n), exact per pair
    dist = np.sort(dist, axis=1)
    mu = dist[:, 2] / dist[:, 1]
    k = int(n * (1 - f))
    mu = np.sort(mu)[:k]
    x = np.log(mu)
    y = -np.log(1 - np.arange(k) / n)
    return float((x * y).sum() / (x * x).sum())


def distinct(points):
    _, first = np.unique(points, axis=0, return_index=True)
    return points[np.sort(first)]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/twonn_reference.json"
    rng = np.random.default_rng(20241212)
    cases = []
    # A curved 3-D manifold in R^12 plus noise, and a 6-D Gaussian in a random subspace of R^30
    # (skdim's two code paths: D <= 25 nearest neighbours, D > 25 distance-matrix chunks).
    t = rng.uniform(-1, 1, size=(180, 3))
    curved = np.concatenate([t, np.sin(2 * t), np.cos(3 * t), t**2], axis=1) + 1e-3 * rng.standard_normal((180, 12))
    basis, _ = np.linalg.qr(rng.standard_normal((30, 6)))
    gauss = rng.standard_normal((150, 6)) @ basis.T
    dup_rows = np.concatenate([curved[:60], curved[[3, 3, 17, 41, 0]]], axis=0)  # 5 repeats
    for name, pts in [("curved3_in_r12", curved), ("gauss6_in_r30", gauss), ("duplicates", dup_rows)]:
        uniq = distinct(pts)
        cases.append({
            "name": name,
            "n": int(pts.shape[0]),
            "d": int(pts.shape[1]),
            "distinct": int(uniq.shape[0]),
            "points": [float(v) for v in pts.reshape(-1)],
            "expected": {str(f): twonn(uniq, f) for f in (0.0, 0.1, 0.25)},
        })
    with open(out, "w") as fh:
        json.dump({"generator": "tools/twonn_reference.py (skdim TwoNN formula, numpy)", "cases": cases}, fh)
        fh.write("\n")


if __name__ == "__main__":
    main()
