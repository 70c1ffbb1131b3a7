"""Driver of scripts/bench_dist: 1 process x N threads against N ranks x 1 thread, rankforge and torch."""
import argparse, os, re, shlex, statistics, subprocess, sys

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "core", "--map-by", "core"]


def parse(argv):
    p = argparse.ArgumentParser(prog="scripts/bench_dist")
    p.add_argument("rankforge")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-peer", action="store_true")
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.rest = rest  # bench train options (--batch is the global batch)
    return a


def run(cmd, env):
    shown = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(cmd)
    print(f"[bench_dist] running: {shown}", flush=True)
    p = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True)
    lines = [l for l in p.stdout.strip().splitlines() if "tokens_per_s=" in l]
    if p.returncode != 0 or not lines:
        sys.exit(f"[bench_dist] failed ({p.returncode}): {shown}\n{p.stdout[-800:]}{p.stderr[-800:]}")
    print(lines[-1], flush=True)
    f = dict(kv.split("=", 1) for kv in lines[-1].split() if "=" in kv)
    return float(f.get("aggregate_tokens_per_s", f["tokens_per_s"])), f


def main():
    a = parse(sys.argv[1:])
    n = a.ranks
    opts = dict(layers="12", seq="256", batch="4", steps="4")  # GPT-2 small shapes, the global batch of 4
    rest = list(a.rest)
    for i in range(0, len(rest) - 1):
        if rest[i].startswith("--") and rest[i][2:] in opts:
            opts[rest[i][2:]] = rest[i + 1]
    gb = int(opts["batch"])
    if gb % n:
        sys.exit(f"[bench_dist] the global batch {gb} is not a multiple of {n} ranks")

    def rf_cmd(batch):
        return [a.rankforge, "bench", "train", "--layers", opts["layers"], "--seq", opts["seq"], "--batch", str(batch),
                "--steps", opts["steps"]]

    def pt_cmd(batch):
        return ["/usr/bin/python3", "bench/torch_lora_step.py", opts["layers"], "768", "12", "50257", opts["seq"],
                str(batch), opts["steps"]]

    cases = {
        "rankforge 1x%d" % n: (rf_cmd(gb), {"OPENBLAS_NUM_THREADS": str(n)}),
        "rankforge %dx1" % n: (MPIRUN + ["-np", str(n)] + rf_cmd(gb // n), {"OPENBLAS_NUM_THREADS": "1"}),
    }
    if not a.no_peer:
        cases["torch 1x%d" % n] = (pt_cmd(gb), {"THREADS": str(n), "OMP_NUM_THREADS": str(n)})
        cases["torch %dx1" % n] = (MPIRUN + ["-np", str(n), "-x", "DDP=1", "-x", "THREADS=1", "-x", "OMP_NUM_THREADS=1"]
                                   + pt_cmd(gb // n), {"DDP": "1", "THREADS": "1", "OMP_NUM_THREADS": "1"})
    print(f"[bench_dist] layers={opts['layers']} T={opts['seq']} global batch={gb} ranks={n} rounds={a.rounds}", flush=True)
    tps = {k: [] for k in cases}
    share = []
    for r in range(a.rounds):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        for k in order:
            v, f = run(*cases[k])
            tps[k].append(v)
            if k == "rankforge %dx1" % n:
                share.append(float(f["allreduce_share"]))
    med = {k: statistics.median(v) for k, v in tps.items()}
    rf1, rfn = med["rankforge 1x%d" % n], med["rankforge %dx1" % n]
    line = (f"bench_dist ranks={n} rankforge_1x{n}_tokens_per_s={rf1:.1f} rankforge_{n}x1_tokens_per_s={rfn:.1f} "
            f"rankforge_scaling={rfn / rf1:.2f} rankforge_allreduce_share={statistics.median(share):.3f}")
    if not a.no_peer:
        pt1, ptn = med["torch 1x%d" % n], med["torch %dx1" % n]
        line += (f" torch_1x{n}_tokens_per_s={pt1:.1f} torch_{n}x1_tokens_per_s={ptn:.1f} torch_scaling={ptn / pt1:.2f}"
                 f" ratio_1x{n}={rf1 / pt1:.2f} ratio_{n}x1={rfn / ptn:.2f}")
    print(line, flush=True)


if __name__ == "__main__":
    main()
