#!/usr/bin/env python3
"""Second half of peft_interop.py's PEFT -> rankforge check, run here with rankforge built: rankforge's logits
through each adapter PEFT wrote (ROOT/peft_written/<name>/adapter) against PEFT's own (peft_logits.safetensors).
usage: check_peft_written.py RANKFORGE ROOT   (standard library only)"""
import json, os, struct, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "..", "tests", "fixtures", "hf")


def read_f32(path, key):  # minimal safetensors reader for one F32 tensor
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        meta = head[key]
        assert meta["dtype"] == "F32", meta
        a, b = meta["data_offsets"]
        f.seek(8 + n + a)
        raw = f.read(b - a)
    return list(struct.unpack(f"<{(b - a) // 4}f", raw))


rf, root = sys.argv[1], sys.argv[2]
worst = 0.0
for name in sorted(os.listdir(os.path.join(root, "peft_written"))):
    d = os.path.join(root, "peft_written", name)
    out = os.path.join(d, "rf_logits.safetensors")
    subprocess.run([rf, "forward", "--model", os.path.join(fixtures, "gpt2", "base"), "--input",
                    os.path.join(fixtures, "gpt2", "reference.safetensors"), "--adapter", os.path.join(d, "adapter"),
                    "--output", out], check=True)
    p, r = read_f32(os.path.join(d, "peft_logits.safetensors"), "logits"), read_f32(out, "logits")
    gap = max(abs(x - y) for x, y in zip(p, r)) / max(abs(x) for x in p)
    worst = max(worst, gap)
    print(f"peft_written/{name}: rankforge-vs-peft gap {gap:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
