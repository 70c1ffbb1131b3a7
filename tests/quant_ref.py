#!/usr/bin/env python3
"""Independent NumPy reference for bitsandbytes' quantization numerics (tests/test_quant.cpp).

Written from bitsandbytes' semantics (bitsandbytes/functional.py and csrc/kernels.cu), not from
engine/quant.cpp. Where the engine walks the CUDA kernels' decision trees, this file states what the
trees compute: a code is the count of pivots strictly below the value (np.searchsorted), the 8-bit
dynamic code is the nearest entry with a tie going to the even index. All arithmetic is f32 like the
kernels (one rounding per operation), except the double-quant offset: the exact mean, rounded to f32.

Usage: quant_ref.py DIR. DIR/cases.txt lists the cases, one a line:
  q4  NAME N BLOCKSIZE nf4|fp4 DQ   NAME.in: N f32      -> NAME.packed NAME.absmax NAME.deq
                                                           (DQ=1 also NAME.qabsmax NAME.nabsmax
                                                            NAME.offset NAME.absmax_dq NAME.deq_dq)
  dyn NAME N BLOCKSIZE              NAME.in: N f32      -> NAME.codes NAME.absmax
  i8  NAME ROWS COLS                NAME.in: ROWS*COLS  -> NAME.q NAME.scb NAME.deq
DIR/dynamic_map.f32 is the engine's 256-entry dynamic map: checked here against
create_dynamic_map's formula (within 1 f32 ulp, see check_dynamic_map) and then used for the codes.
"""
import math
from fractions import Fraction
import statistics
import sys
from pathlib import Path

try:
    import numpy as np
except ImportError:
    sys.exit("[quant_ref] NumPy is missing: install python3-numpy (scripts/setup does)")

F32 = np.float32

# get_4bit_type("nf4"): the NF4 values as bitsandbytes hardcodes them (the QLoRA paper's table).
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=F32)

# FP4 (1 sign, 2 exponent, 1 mantissa bit): bit pattern b2b1b0 of the magnitude -> value in units
# of 1/12 (kernels.cu comment: 0b000=0, 0b001=0.0625, 0b010=8, 0b011=12, 0b100=4, 0b101=6,
# 0b110=2, 0b111=3); bit 3 is the sign. get_4bit_type divides by the largest, 12, in f32.
FP4_MAG = np.array([0, 0.0625, 8, 12, 4, 6, 2, 3], dtype=F32) / F32(12)
FP4 = np.concatenate([FP4_MAG, -FP4_MAG]).astype(F32)
FP4[8] = 0.0  # get_4bit_type writes Python's int -0, i.e. +0.0



def f32_of(text):
    """A C++ float literal's value: the decimal rounded once to the nearest f32, ties to even.
    np.float32(float(text)) rounds twice (to f64, then f32) and is 1 ulp off for some pivots."""
    exact = Fraction(text)
    near = F32(float(text))
    cands = [np.nextafter(near, F32(-np.inf)), near, np.nextafter(near, F32(np.inf))]
    key = lambda c: (abs(Fraction(float(c)) - exact), int(c.view(np.uint32)) & 1)
    return min(cands, key=key)


# dQuantizeNF4 (csrc/kernels.cu) is a decision tree on these literals, strict `>`. They are the exact
# midpoints of the NF4 table; rounded once to f32 four of them (indices 0, 8, 12, 14) land 1 ulp away
# from (NF4[i] + NF4[i+1]) / 2 computed in f32, which bitsandbytes' torch fallback bucketizes on.
NF4_PIVOTS = np.array([f32_of(t) for t in (
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011")], dtype=F32)

# dQuantizeFP4 compares |x| against these literals. They are not all the f32 midpoints of FP4_MAG
# sorted (0.583333 is 6 ulps below (1/2 + 2/3) / 2): the kernel's own constants are the definition.
FP4_PIVOTS = np.array([f32_of(t) for t in (
    "0.00260417", "0.0859375", "0.20833333", "0.29166667", "0.4166667", "0.583333", "0.8333333")],
    dtype=F32)


def check_nf4_table():
    """create_normal_map(offset=0.9677083, use_extra_value=True) from the normal quantiles."""
    nd = statistics.NormalDist()
    off = 0.9677083
    pos = [nd.inv_cdf(off + (0.5 - off) * i / 8) for i in range(8)]
    neg = [-nd.inv_cdf(off + (0.5 - off) * i / 7) for i in range(7)]
    v = np.sort(np.array(pos + [0.0] + neg))
    v /= v.max()
    if np.max(np.abs(v - NF4.astype(np.float64))) > 1e-6:
        sys.exit("[quant_ref] the NF4 table does not match the normal quantiles")
    mids = (NF4[:-1] + NF4[1:]) / F32(2)
    if np.max(np.abs(mids.view(np.int32) - NF4_PIVOTS.view(np.int32))) > 1:
        sys.exit("[quant_ref] the NF4 pivots are not the midpoints of the table")


def check_dynamic_map(dm):
    """create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each decade i of 7,
    the 2^i means of adjacent points of linspace(0.1, 1, 2^i + 1) times 10^(i-6), both signs, plus
    0 and 1.0. bitsandbytes builds it with torch's f32 linspace, whose rounding depends on the torch
    version and CPU, so each entry must be within 1 ulp of the exact value rounded to f32."""
    data = [0.0, 1.0]
    for i in range(7):
        b = np.linspace(0.1, 1.0, 2**i + 1)
        means = (b[:-1] + b[1:]) / 2 * 10.0 ** (i - 6)
        data += list(means) + list(-means)
    want = np.sort(np.array(data)).astype(F32)
    if dm.size != 256 or not np.all(np.diff(dm) > 0):
        sys.exit("[quant_ref] dynamic map: need 256 strictly increasing values")
    ulps = np.abs(want.view(np.int32).astype(np.int64) - dm.view(np.int32).astype(np.int64))
    if ulps.max() > 1:
        sys.exit(f"[quant_ref] dynamic map entry {int(ulps.argmax())} is {int(ulps.max())} ulps off the formula")


def scaled(block, absmax):
    """block * (1/absmax) in f32 (the kernels multiply by the reciprocal); a subnormal absmax whose
    reciprocal overflows divides instead (bitsandbytes leaves that case undefined)."""
    with np.errstate(over="ignore"):
        inv = F32(1) / absmax
    return block / absmax if np.isinf(inv) else block * inv


def code4(x, kind):
    if kind == "nf4":  # the count of pivots strictly below x
        return np.searchsorted(NF4_PIVOTS, x, side="left").astype(np.uint8)
    rank = np.searchsorted(FP4_PIVOTS, np.abs(x), side="left")
    bits = np.argsort(FP4_MAG, kind="stable")  # magnitude rank -> bit pattern
    return (bits[rank] | np.where(x < 0, 8, 0)).astype(np.uint8)


def quantize4(w, bs, kind):
    table = NF4 if kind == "nf4" else FP4
    zero = int(np.flatnonzero(table == 0)[0])  # the code of 0.0: what a zero block and the pad get
    nb = (w.size + bs - 1) // bs
    codes = np.empty(w.size, dtype=np.uint8)
    absmax = np.empty(nb, dtype=F32)
    for b in range(nb):
        blk = w[b * bs:(b + 1) * bs]
        a = np.max(np.abs(blk))
        absmax[b] = a
        codes[b * bs:(b + 1) * bs] = zero if a == 0 else code4(scaled(blk, a), kind)
    if codes.size % 2:
        codes = np.append(codes, np.uint8(zero))
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)  # first element: high nibble
    return packed, absmax


def dequantize4(packed, absmax, n, bs, kind):
    table = NF4 if kind == "nf4" else FP4
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 0x0F
    scale = np.repeat(absmax, bs)[:n]
    return table[codes[:n]] * scale


def code_dynamic(x, dm):
    mids = (dm[:-1] + dm[1:]) * F32(0.5)
    k = np.searchsorted(mids, x, side="left")  # nearest entry, a value on a midpoint -> lower index
    kk = np.minimum(k, mids.size - 1)
    tie = (k < mids.size) & (x == mids[kk]) & (k % 2 == 1)
    return (k + tie).astype(np.uint8)  # ... except that the kernel's search sends ties to the even index


def quantize_dynamic(x, bs, dm):
    zero = int(np.flatnonzero(dm == 0)[0])
    nb = (x.size + bs - 1) // bs
    codes = np.empty(x.size, dtype=np.uint8)
    absmax = np.empty(nb, dtype=F32)
    for b in range(nb):
        blk = x[b * bs:(b + 1) * bs]
        a = np.max(np.abs(blk))
        absmax[b] = a
        codes[b * bs:(b + 1) * bs] = zero if a == 0 else code_dynamic(scaled(blk, a), dm)
    return codes, absmax


def quantize_int8(w):
    scb = np.max(np.abs(w), axis=1).astype(F32)
    q = np.zeros(w.shape, dtype=np.int8)
    for r in range(w.shape[0]):
        if scb[r] == 0:
            continue
        with np.errstate(over="ignore"):
            scale = F32(127) / scb[r]
        v = (w[r] / scb[r]) * F32(127) if np.isinf(scale) else w[r] * scale
        q[r] = np.rint(v).astype(np.int8)  # rint: half to even, like torch.round and __float2int_rn
    deq = (q.astype(F32) * scb[:, None]) * F32(7.874015718698502e-3)
    return q, scb, deq


def main():
    d = Path(sys.argv[1])
    check_nf4_table()
    dm = np.fromfile(d / "dynamic_map.f32", dtype=F32)
    check_dynamic_map(dm)
    for line in (d / "cases.txt").read_text().splitlines():
        f = line.split()
        if not f:
            continue
        kind, name = f[0], f[1]
        x = np.fromfile(d / f"{name}.in", dtype=F32)
        if not np.all(np.isfinite(x)):
            sys.exit(f"[quant_ref] {name}: non-finite input")
        out = lambda ext, a: a.tofile(d / f"{name}.{ext}")
        if kind == "q4":
            n, bs, qt, dq = int(f[2]), int(f[3]), f[4], f[5] == "1"
            assert x.size == n and bs in (32, 64, 128, 256, 512, 1024, 2048, 4096)
            packed, absmax = quantize4(x, bs, qt)
            out("packed", packed)
            out("absmax", absmax)
            out("deq", dequantize4(packed, absmax, n, bs, qt))
            if dq:
                # quantize_4bit(compress_statistics=True): offset = absmax.mean(), then
                # quantize_blockwise(absmax - offset, blocksize=256) with the dynamic map.
                offset = F32(math.fsum(absmax.astype(np.float64)) / absmax.size)
                qabs, nabs = quantize_dynamic((absmax - offset).astype(F32), 256, dm)
                # dequantize_blockwise(...) then `absmax += offset`, each in f32.
                absmax_dq = (dm[qabs] * np.repeat(nabs, 256)[:qabs.size]) + offset
                out("qabsmax", qabs)
                out("nabsmax", nabs)
                out("offset", np.array([offset], dtype=F32))
                out("absmax_dq", absmax_dq)
                out("deq_dq", dequantize4(packed, absmax_dq, n, bs, qt))
        elif kind == "dyn":
            codes, absmax = quantize_dynamic(x, int(f[3]), dm)
            out("codes", codes)
            out("absmax", absmax)
        elif kind == "i8":
            q, scb, deq = quantize_int8(x.reshape(int(f[2]), int(f[3])))
            out("q", q)
            out("scb", scb)
            out("deq", deq)
        else:
            sys.exit(f"[quant_ref] unknown case kind {kind}")
    print("[quant_ref] ok")


if __name__ == "__main__":
    main()
