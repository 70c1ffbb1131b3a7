"""Runs `rankforge bench train` and the PyTorch peer (bench/torch_lora_step.py) one after the other in
one run, on the same shape and thread count, and prints both lines and the ratios. Peak RSS is taken
the same way for both: the kernel's ru_maxrss of each child, from os.wait4.
usage: bench_train.py RANKFORGE [layers d_model heads vocab seq batch steps]"""
import os, re, subprocess, sys

def run(cmd, env):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if p.returncode != 0:
        sys.exit(f"[bench_train] {' '.join(cmd[:3])} failed ({p.returncode}): {out.strip()[-800:]}")
    m = re.search(r"tokens_per_s=([0-9.]+)", last)
    if not m:
        sys.exit(f"[bench_train] no tokens_per_s= in: {last}")
    return last, float(m.group(1)), ru.ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux

def main():
    rankforge = sys.argv[1]
    shape = [int(x) for x in (sys.argv[2:9] or [12, 768, 12, 50257, 256, 4, 6])]
    L, D, H, V, T, B, S = shape
    threads = os.environ.get("THREADS", str(os.cpu_count()))
    env = dict(os.environ, THREADS=threads, OMP_NUM_THREADS=threads, RF_NUM_THREADS=threads)
    here = os.path.dirname(os.path.abspath(__file__))
    peer = [sys.executable, os.path.join(here, "..", "bench", "torch_lora_step.py")] + [str(x) for x in shape]
    ours = [rankforge, "bench", "train", "--layers", str(L), "--d-model", str(D), "--heads", str(H), "--vocab", str(V),
            "--seq", str(T), "--batch", str(B), "--rank", "8", "--steps", str(S), "--device", "cpu"]
    print(f"[bench_train] shape L={L} D={D} H={H} V={V} T={T} B={B} steps={S} threads={threads}", flush=True)
    rl, rt, rm = run(ours, env)
    print(f"{rl} child_peak_rss_mb={rm:.0f}", flush=True)
    pl, pt, pm = run(peer, env)
    print(f"{pl} child_peak_rss_mb={pm:.0f}", flush=True)
    print(f"tokens_per_s_ratio={rt / pt:.2f} peak_rss_ratio={rm / pm:.2f} rankforge_tokens_per_s={rt:.0f} "
          f"torch_tokens_per_s={pt:.0f} rankforge_peak_rss_mb={rm:.0f} torch_peak_rss_mb={pm:.0f}")

main()
