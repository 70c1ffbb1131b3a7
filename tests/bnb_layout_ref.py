#!/usr/bin/env python3
"""Independent reader of bitsandbytes' serialized layout (tests/test_bnb_io.cpp).

Usage: bnb_layout_ref.py QUANT_DIR ORIG_DIR OUT_DIR linear|conv1d (conv1d: the source stores (in, out), GPT-2). Reads QUANT_DIR (config.json + model.safetensors, as
transformers' save_pretrained of a bitsandbytes model lays them out) with its own safetensors parser, and
for each quantized Linear checks what bitsandbytes' QuantState.from_dict / Linear8bitLt expect: the key
set, the JSON quant state, quant_map and nested_quant_map; then re-quantizes the original f32 weight from
ORIG_DIR with tests/quant_ref.py (bitsandbytes' semantics) and requires identical bytes; finally writes
the dequantized weight as OUT_DIR/<weight key>.f32 (absmax rebuilt from the nested statistics when
double-quantized) for the test to compare with the engine. Any mismatch exits non-zero with one line.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quant_ref as qr  # noqa: E402

F32 = np.float32
DT = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "I8": np.int8, "I64": np.int64, "BF16": np.uint16}


def load(path):
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    data = b[8 + n:]
    out = {}
    for k, t in h.items():
        lo, hi = t["data_offsets"]
        a = np.frombuffer(data[lo:hi], dtype=DT[t["dtype"]]).reshape(t["shape"])
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[k] = (t["dtype"], a)
    return out


def die(msg):
    sys.exit(f"[bnb_layout_ref] {msg}")


def main():
    qdir, odir, outdir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    conv1d = sys.argv[4] == "conv1d"
    cfg = json.loads((qdir / "config.json").read_text())
    qc = cfg.get("quantization_config") or die("config.json has no quantization_config")
    if qc.get("quant_method") != "bitsandbytes":
        die("quant_method is not bitsandbytes")
    q = load(qdir / "model.safetensors")
    orig = load(odir / "model.safetensors")
    four = bool(qc.get("load_in_4bit"))
    if four == bool(qc.get("load_in_8bit")):
        die("exactly one of load_in_4bit / load_in_8bit")
    done = 0
    for key in sorted(q):
        if four and key.endswith(".weight") and any(k.startswith(key + ".quant_state.") for k in q):
            states = [k for k in q if k.startswith(key + ".quant_state.bitsandbytes__")]
            if len(states) != 1:
                die(f"{key}: {len(states)} quant states")
            kind = states[0].rsplit("__", 1)[1]
            if kind != qc["bnb_4bit_quant_type"]:
                die(f"{key}: quant type {kind} vs config {qc['bnb_4bit_quant_type']}")
            st = json.loads(bytes(q[states[0]][1]).decode())
            nested = bool(qc["bnb_4bit_use_double_quant"])
            want = {"quant_type", "blocksize", "dtype", "shape"} | (
                {"nested_blocksize", "nested_dtype", "nested_offset"} if nested else set())
            if set(st) != want:
                die(f"{key}: quant state keys {sorted(st)} != {sorted(want)}")
            extra = {"absmax", "quant_map"} | ({"nested_absmax", "nested_quant_map"} if nested else set())
            present = {k[len(key) + 1:] for k in q if k.startswith(key + ".") and ".quant_state." not in k}
            if present != extra:
                die(f"{key}: tensors {sorted(present)} != {sorted(extra)}")
            rows, cols = st["shape"]
            n, bs = rows * cols, st["blocksize"]
            dt, packed = q[key]
            if dt != "U8" or list(packed.shape) != [(n + 1) // 2, 1]:
                die(f"{key}: packed weight {dt} {list(packed.shape)}, expected U8 [{(n + 1) // 2}, 1]")
            table = qr.NF4 if kind == "nf4" else qr.FP4
            if not np.array_equal(q[key + ".quant_map"][1], table):
                die(f"{key}: quant_map is not bitsandbytes' {kind} table")
            # the source weight, (out, in) as bitsandbytes quantizes it (GPT-2's Conv1D is transposed)
            w = orig[key][1].astype(F32)
            w = w.T if conv1d else w
            ref_packed, ref_absmax = qr.quantize4(np.ascontiguousarray(w).reshape(-1), bs, kind)
            if not np.array_equal(packed.reshape(-1), ref_packed):
                die(f"{key}: packed codes differ from bitsandbytes' quantization of the source weight")
            if nested:
                dm = q[key + ".nested_quant_map"][1]
                qr.check_dynamic_map(dm)
                nbs, off = st["nested_blocksize"], F32(st["nested_offset"])
                codes, nabs = q[key + ".absmax"][1], q[key + ".nested_absmax"][1]
                if q[key + ".absmax"][0] != "U8":
                    die(f"{key}: nested absmax codes must be U8")
                ref_codes, ref_nabs = qr.quantize_dynamic(ref_absmax - off, nbs, dm)
                if not (np.array_equal(codes, ref_codes) and np.array_equal(nabs, ref_nabs)):
                    die(f"{key}: nested statistics differ from bitsandbytes' double quantization")
                absmax = (dm[codes] * np.repeat(nabs, nbs)[:codes.size]).astype(F32) + off
            else:
                absmax = q[key + ".absmax"][1]
                if not np.array_equal(absmax, ref_absmax):
                    die(f"{key}: absmax differs")
            deq = qr.dequantize4(packed.reshape(-1), absmax.astype(F32), n, bs, kind).astype(F32)
            deq.tofile(outdir / f"{key}.f32")
            done += 1
        elif not four and key.endswith(".SCB"):
            mod = key[:-4]
            dt, cb = q[mod + ".weight"]
            if dt != "I8":
                die(f"{mod}.weight must be I8")
            fmt_ = q.get(mod + ".weight_format")
            if fmt_ is None or fmt_[0] != "U8" or int(fmt_[1].reshape(-1)[0]) != 0:
                die(f"{mod}.weight_format must be a U8 0 (row)")
            w = orig[mod + ".weight"][1].astype(F32)
            w = w.T if conv1d else w
            ref_q, ref_scb, deq = qr.quantize_int8(np.ascontiguousarray(w))
            if not (np.array_equal(cb, ref_q) and np.array_equal(q[key][1], ref_scb)):
                die(f"{mod}: int8 rows or SCB differ from LLM.int8's quantization of the source weight")
            deq.astype(F32).tofile(outdir / f"{mod}.weight.f32")
            done += 1
    if done == 0:
        die("no quantized Linear found")
    print(done)


if __name__ == "__main__":
    main()
