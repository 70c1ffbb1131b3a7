#!/usr/bin/env python3
"""The planted-rank table of the README: every strategy, official and recommended settings, AdaLoRA at
budgets 0.75x / 1x / 1.5x the planted total (given explicitly), 3 patterns x 2 layouts x 3 seeds, each run
with --match-params (an equal-parameter LoRA on the same teacher and seed).

usage: scripts/bench_ranks_table.py [--jobs N] [--steps N] [--seeds 0,1,2] [--out runs.jsonl] [--markdown]
Runs go to --out as one JSON object per line (a rerun skips the ones already there); --markdown prints the
summary table (median and range over seeds and patterns, per layout) and the per-pattern table.
"""
import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys

# Drawn once with random.Random(22), ranks 0..6 for n = 6, 8, 10 modules: no setting was tuned on them.
PATTERNS = ["1,1,0,4,3,1", "5,0,5,5,2,6,0,1", "2,0,2,4,1,4,5,5,3,5"]
LAYOUTS = ["parallel", "chain"]
BUDGETS = [0.75, 1.0, 1.5]
# (strategy, setting label, extra arguments, takes a budget)
SETTINGS = [
    ("lora", "capacity 8", [], False),
    ("adalora", "official", [], True),
    ("adalora", "recommended: --orth-reg-weight 1e-3", ["--orth-reg-weight", "1e-3"], True),
    ("aroma", "official", [], False),
    ("aroma", "recommended: --threshold 0.02", ["--threshold", "0.02"], False),
    ("autolora", "official", [], False),
    ("autolora", "recommended: --search-weight-decay 1 --outer-lr 3e-3",
     ["--search-weight-decay", "1", "--outer-lr", "3e-3"], False),
    # A planted 0 gives that module exact-zero gradients noise-free, and r = #{softmax(α)_j >= 1/k} >= 1 cannot
    # say 0; label noise (the gap is still measured on clean outputs; the matched LoRA gets the same noise).
    ("autolora", "recommended + label noise: same + --noise 0.1",
     ["--search-weight-decay", "1", "--outer-lr", "3e-3", "--noise", "0.1"], False),
    ("gelora", "official", [], False),
    ("rosa", "official (d = 2/dim)", [], False),
]


def budget_for(pattern, factor):
    total = sum(int(r) for r in pattern.split(","))
    return max(1, int(factor * total + 0.5))


def jobs(seeds):
    for layout in LAYOUTS:
        for pattern in PATTERNS:
            for seed in seeds:
                for strategy, label, extra, budgeted in SETTINGS:
                    for factor in (BUDGETS if budgeted else [None]):
                        yield dict(strategy=strategy, setting=label, extra=extra, layout=layout, pattern=pattern,
                                   seed=seed, factor=factor)


def key(j):
    return (j["strategy"], j["setting"], j["layout"], j["pattern"], j["seed"], j["factor"])


def run(rf, steps, j):
    cmd = [rf, "bench", "ranks", "--strategy", j["strategy"], "--planted", j["pattern"], "--layout", j["layout"],
           "--seed", str(j["seed"]), "--steps", str(steps), "--match-params"] + j["extra"]
    if j["factor"] is not None:
        cmd += ["--budget", str(budget_for(j["pattern"], j["factor"]))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"[bench_ranks_table] {' '.join(cmd)}: {out.stderr.strip()}")
    last = out.stdout.strip().splitlines()[-1]
    kv = dict(item.split("=", 1) for item in last.split())
    rec = {k: j[k] for k in ("strategy", "setting", "layout", "pattern", "seed", "factor")}
    rec["command"] = " ".join(cmd[1:])
    rec.update(kv)
    return rec


def fnum(x):
    try:
        return float(x)
    except ValueError:
        return float("nan")


def cell(values, fmt):
    vals = [v for v in values if v == v]  # NaN: Spearman of a uniform allocation
    if not vals:
        return "—"
    med = statistics.median(vals)
    return f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})"


def sp(x):
    return f"{x:.2f}"


def g(x):
    return f"{x:.2g}"


def markdown(recs):
    for r in recs:  # a uniform allocation has no ranking (binaries before 2026-12-05 printed 0 for n = 10)
        if len(set(r["found"].split(","))) == 1:
            r["spearman"] = "nan"
    groups = {}
    for r in recs:
        groups.setdefault((r["strategy"], r["setting"], r["factor"], r["layout"]), []).append(r)
    order = [(s, l, f) for s, l, _, b in SETTINGS for f in (BUDGETS if b else [None])]
    print("| strategy | setting | budget | layout | Spearman | gap_ratio | gap_vs_lora | effective params |")
    print("|---|---|---|---|---|---|---|---|")
    for s, l, f in order:
        for layout in LAYOUTS:
            rs = groups.get((s, l, f, layout), [])
            if not rs:
                continue
            print(f"| {s} | {l} | {'—' if f is None else f'{f}×'} | {layout} | "
                  f"{cell([fnum(r['spearman']) for r in rs], sp)} | {cell([fnum(r['gap_ratio']) for r in rs], g)} | "
                  f"{cell([fnum(r['gap_vs_lora']) for r in rs], g)} | "
                  f"{cell([fnum(r['effective_params']) for r in rs], lambda x: f'{x:.0f}')} |")
    print()
    print("| pattern | layout | strategy | setting | budget | found (seed 0) | Spearman | gap_ratio | gap_vs_lora |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layout in LAYOUTS:
        for p in PATTERNS:
            for s, l, f in order:
                rs = [r for r in groups.get((s, l, f, layout), []) if r["pattern"] == p]
                if not rs:
                    continue
                found0 = next((r["found"] for r in rs if r["seed"] == 0), "?")
                b = "—" if f is None else f"{f}× = {budget_for(p, f)}"
                print(f"| {p} | {layout} | {s} | {l} | {b} | {found0} | {cell([fnum(r['spearman']) for r in rs], sp)} | "
                      f"{cell([fnum(r['gap_ratio']) for r in rs], g)} | {cell([fnum(r['gap_vs_lora']) for r in rs], g)} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="bench_ranks_runs.jsonl")
    ap.add_argument("--markdown", action="store_true", help="print the tables from --out, run nothing")
    a = ap.parse_args()
    rf = os.environ.get("RANKFORGE", os.path.join(os.path.dirname(__file__), "..", "build", "tools", "rankforge"))
    done = []
    if os.path.exists(a.out):
        with open(a.out) as f:
            done = [json.loads(line) for line in f if line.strip()]
    if a.markdown:
        markdown(done)
        return
    if not os.access(rf, os.X_OK):
        sys.exit(f"[bench_ranks_table] no rankforge binary at {rf} (build first, or set RANKFORGE)")
    have = {key(r) for r in done}
    todo = [j for j in jobs([int(s) for s in a.seeds.split(",")]) if key(j) not in have]
    print(f"[bench_ranks_table] {len(todo)} runs to do, {len(have)} already in {a.out}", file=sys.stderr)
    with cf.ThreadPoolExecutor(a.jobs) as ex, open(a.out, "a") as f:
        for rec in ex.map(lambda j: run(rf, a.steps, j), todo):
            f.write(json.dumps(rec) + "\n")
            f.flush()


if __name__ == "__main__":
    main()
