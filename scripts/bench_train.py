"""Side-by-side training benchmark: `rankforge bench train` against the PyTorch peer (bench/torch_lora_step.py)
on the same shape, precision, base dtype, checkpointing and thread count, in alternating rounds (round 1 rankforge
then torch, round 2 torch then rankforge, ...), each side a child process. Peak RSS is taken the same way for both:
the kernel's ru_maxrss of each child, from os.wait4. The summary line gives the median tokens/s of each side, the
median of the per-round tokens/s ratios, and the largest peak RSS of each side over the rounds.

usage: bench_train.py RANKFORGE [layers d_model heads vocab seq batch steps] [options]
       bench_train.py RANKFORGE [--arch gpt2|llama] [--config FILE] [--layers N] [--d-model D] [--heads H]
                      [--vocab V] [--seq T] [--batch B] [--steps S] [--precision f32|bf16]
                      [--base-dtype f32|bf16|f16] [--checkpointing] [--rounds N] [--threads N] [--no-peer]
Seven plain integers right after RANKFORGE are the old positional shape (GPT-2 unless --arch says otherwise).
gpt2 defaults: 12 768 12 50257, seq 256, batch 4, steps 6. llama: the shape comes from --config (default
examples/bench/tinyllama_1b.json); --layers (non-zero) overrides num_hidden_layers; --d-model/--heads/--vocab are
ignored; seq 256, batch 1, steps 4.
The peer's knobs are environment variables: AUTOCAST=bf16 (--precision bf16), BASE_DTYPE, CHECKPOINT=1, ARCH, CONFIG.
"""
import argparse, os, re, shlex, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
PEER = os.path.join(ROOT, "bench", "torch_lora_step.py")
DEFAULT_LLAMA_CONFIG = os.path.join(ROOT, "examples", "bench", "tinyllama_1b.json")
GPT2_DEFAULTS = dict(layers=12, d_model=768, heads=12, vocab=50257, seq=256, batch=4, steps=6)
LLAMA_DEFAULTS = dict(seq=256, batch=1, steps=4)
SHAPE_KEYS = ("layers", "d_model", "heads", "vocab", "seq", "batch", "steps")
COMPARED = ("L", "D", "V", "T", "B", "trainable")  # fields both lines print; a mismatch means unequal work


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench_train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rankforge", help="the rankforge binary")
    p.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    p.add_argument("--config", help="llama: a Hugging Face LlamaConfig JSON (default examples/bench/tinyllama_1b.json)")
    p.add_argument("--layers", type=int, help="gpt2: layers (12); llama: overrides num_hidden_layers when non-zero")
    p.add_argument("--d-model", type=int, help="gpt2 only (768)")
    p.add_argument("--heads", type=int, help="gpt2 only (12)")
    p.add_argument("--vocab", type=int, help="gpt2 only (50257)")
    p.add_argument("--seq", type=int, help="sequence length (256)")
    p.add_argument("--batch", type=int, help="batch (gpt2 4, llama 1)")
    p.add_argument("--steps", type=int, help="timed steps after one warm-up (gpt2 6, llama 4)")
    p.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                   help="bf16: rankforge --precision bf16, the peer under torch.autocast(bf16)")
    p.add_argument("--base-dtype", choices=("f32", "bf16", "f16"), default="f32", help="dtype of the frozen base")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing per block on both sides")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("THREADS") or os.cpu_count() or 1),
                   help="threads for both sides (THREADS from the environment, else os.cpu_count())")
    p.add_argument("--no-peer", action="store_true", help="run only rankforge")
    # Backward compatibility: RANKFORGE L D H V T B S (seven plain integers) as the old driver took them.
    rest, ints = argv[1:], 0
    while ints < len(rest) and re.fullmatch(r"\d+", rest[ints]):
        ints += 1
    if ints == 7:
        rest = [a for k, v in zip(SHAPE_KEYS, rest[:7]) for a in ("--" + k.replace("_", "-"), v)] + rest[7:]
    elif ints:
        p.error(f"the positional shape is 7 integers (layers d_model heads vocab seq batch steps), got {ints}")
    a = p.parse_args(argv[:1] + rest)
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    if a.threads < 1:
        p.error("--threads must be at least 1")
    if a.arch == "gpt2":
        if a.config:
            p.error("--config is for --arch llama; GPT-2 shapes come from --layers/--d-model/--heads/--vocab")
        for k, v in GPT2_DEFAULTS.items():
            if getattr(a, k) is None:
                setattr(a, k, v)
    else:
        a.config = os.path.abspath(a.config or DEFAULT_LLAMA_CONFIG)
        if not os.path.isfile(a.config):
            p.error(f"--config {a.config}: no such file")
        ignored = [k for k in ("d_model", "heads", "vocab") if getattr(a, k)]
        if ignored:
            print(f"[bench_train] --arch llama: {', '.join(ignored)} ignored (the shape comes from {a.config})", flush=True)
        a.d_model = a.heads = a.vocab = 0
        a.layers = a.layers or 0  # 0: the config's num_hidden_layers
        for k, v in LLAMA_DEFAULTS.items():
            if getattr(a, k) is None:
                setattr(a, k, v)
    for k in SHAPE_KEYS:
        if getattr(a, k) < (0 if k in ("layers", "d_model", "heads", "vocab") and a.arch == "llama" else 1):
            p.error(f"--{k.replace('_', '-')} must be positive")
    return a


def rankforge_cmd(a):
    cmd = [a.rankforge, "bench", "train", "--arch", a.arch]
    if a.arch == "gpt2":
        cmd += ["--layers", str(a.layers), "--d-model", str(a.d_model), "--heads", str(a.heads), "--vocab", str(a.vocab)]
    else:
        cmd += ["--config", a.config] + (["--layers", str(a.layers)] if a.layers else [])
    cmd += ["--seq", str(a.seq), "--batch", str(a.batch), "--rank", "8", "--steps", str(a.steps),
            "--precision", a.precision, "--base-dtype", a.base_dtype]
    return cmd + (["--checkpointing"] if a.checkpointing else []) + ["--device", "cpu"]


def peer_cmd_env(a):
    cmd = [sys.executable, PEER] + [str(getattr(a, k)) for k in SHAPE_KEYS]
    knobs = {"ARCH": a.arch, "AUTOCAST": "bf16" if a.precision == "bf16" else "off", "BASE_DTYPE": a.base_dtype,
             "CHECKPOINT": "1" if a.checkpointing else "0"}
    if a.arch == "llama":
        knobs["CONFIG"] = a.config
    return cmd, knobs


def run(cmd, env, knobs=None):
    """Runs one child to completion; returns its last output line, tokens/s and peak RSS (MB)."""
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (knobs or {}).items()) + (" " if knobs else "") + shlex.join(cmd)
    print(f"[bench_train] running: {shown}", flush=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if p.returncode != 0:
        sys.exit(f"[bench_train] {shown} failed ({p.returncode}): {out.strip()[-800:]}")
    m = re.search(r"tokens_per_s=([0-9.]+)", last)
    if not m:
        sys.exit(f"[bench_train] {shown}: no tokens_per_s= in its last line: {last}")
    return last, float(m.group(1)), ru.ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def main():
    a = parse_args(sys.argv[1:])
    threads = str(a.threads)
    env = dict(os.environ, THREADS=threads, OMP_NUM_THREADS=threads, RF_NUM_THREADS=threads)
    for k in ("ARCH", "AUTOCAST", "BASE_DTYPE", "CHECKPOINT", "CONFIG"):
        env.pop(k, None)  # the peer's knobs come from the options only, never from the caller's environment
    ours = rankforge_cmd(a)
    peer, knobs = peer_cmd_env(a)
    peer_env = dict(env, **knobs)
    shape = (f"L={a.layers} D={a.d_model} H={a.heads} V={a.vocab}" if a.arch == "gpt2" else
             f"config={a.config} layers={a.layers or 'config'}")
    print(f"[bench_train] arch={a.arch} {shape} T={a.seq} B={a.batch} steps={a.steps} precision={a.precision} "
          f"base_dtype={a.base_dtype} checkpointing={int(a.checkpointing)} rounds={a.rounds} threads={threads}"
          f"{' peer=none' if a.no_peer else ''}", flush=True)
    rf_tps, rf_rss, pt_tps, pt_rss, ratios = [], [], [], [], []
    for r in range(a.rounds):
        order = ["rankforge"] if a.no_peer else (["rankforge", "torch"] if r % 2 == 0 else ["torch", "rankforge"])
        print(f"[bench_train] round {r + 1}/{a.rounds}: {' then '.join(order)}", flush=True)
        lines = {}
        for side in order:
            line, tps, rss = run(ours, env) if side == "rankforge" else run(peer, peer_env, knobs)
            print(f"{line} child_peak_rss_mb={rss:.0f}", flush=True)
            lines[side] = line
            (rf_tps if side == "rankforge" else pt_tps).append(tps)
            (rf_rss if side == "rankforge" else pt_rss).append(rss)
        if a.no_peer:
            continue
        ratios.append(rf_tps[-1] / pt_tps[-1])
        print(f"[bench_train] round {r + 1}/{a.rounds}: tokens/s ratio {ratios[-1]:.3f}, "
              f"peak RSS ratio {rf_rss[-1] / pt_rss[-1]:.3f}", flush=True)
        if r == 0:
            f_rf, f_pt = fields(lines["rankforge"]), fields(lines["torch"])
            diff = [f"{k} rankforge={f_rf[k]} torch={f_pt[k]}" for k in COMPARED if k in f_rf and k in f_pt and f_rf[k] != f_pt[k]]
            if diff:
                print(f"[bench_train] warning: the two sides report different work: {'; '.join(diff)}", flush=True)
    head = (f"bench_train arch={a.arch} precision={a.precision} base_dtype={a.base_dtype} "
            f"checkpointing={int(a.checkpointing)} rounds={a.rounds}")
    if a.no_peer:
        print(f"{head} rankforge_tokens_per_s={statistics.median(rf_tps):.1f} "
              f"rankforge_peak_rss_mb={max(rf_rss):.0f} peer=none")
        return
    torch_mode = ("bf16-autocast" if a.precision == "bf16" else "f32") + \
                 ("" if a.base_dtype == "f32" else f"+{a.base_dtype}-base")
    print(f"{head} rankforge_tokens_per_s={statistics.median(rf_tps):.1f} torch_tokens_per_s={statistics.median(pt_tps):.1f} "
          f"tokens_per_s_ratio={statistics.median(ratios):.2f} rankforge_peak_rss_mb={max(rf_rss):.0f} "
          f"torch_peak_rss_mb={max(pt_rss):.0f} peak_rss_ratio={max(rf_rss) / max(pt_rss):.2f} torch_mode={torch_mode}")


if __name__ == "__main__":
    main()
