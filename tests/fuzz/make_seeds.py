#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets: make_seeds.py OUT -> OUT/<target>/<seed>.

Seeds are rebuilt on every run (scripts/fuzz) from the repository, so new examples/**/*.yaml files
join fuzz_config's corpus without an edit here. tests/fuzz/regressions/<target>/* (inputs that once
failed) are added as they are.
"""
import glob
import json
import os
import shutil
import struct
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def safetensors_image(header, data_bytes):
    """A valid file image: length prefix, header padded to 8 bytes, data_bytes of filler."""
    h = header.encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"\x3f" * data_bytes


def safetensors_seeds():
    # fuzz_safetensors input: u32 tail length (data the parser sees but nobody stores), then the image.
    images = [
        ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8),
        ('{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},'
         '"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}', 16),
        ('{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}', 6),
        ('{"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"r":{"dtype":"BOOL","shape":[2,1],"data_offsets":[2,4]}}', 4),
        ('{"f64":{"dtype":"F64","shape":[1,2],"data_offsets":[0,16]},"c":{"dtype":"C64","shape":[1],"data_offsets":[16,24]},'
         '"u":{"dtype":"U32","shape":[2],"data_offsets":[24,32]},"h":{"dtype":"I16","shape":[3],"data_offsets":[32,38]},'
         '"s":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[38,41]},"p":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[41,45]},'
         '"z":{"dtype":"U8","shape":[0],"data_offsets":[45,45]}}', 45),
        (' \n\t{"__metadata__":{"k\\u00e9":"v\\n","":""},"a\\"b":{"data_offsets":[0,4],"shape":[],"dtype":"I32"}}', 4),
        ("{}", 0),
    ]
    seeds = {f"builtin_{i}": struct.pack("<I", 0) + safetensors_image(h, n) for i, (h, n) in enumerate(images)}
    # Real checkpoints: the header only, the data section as the tail length.
    for model in ("gpt2", "bert"):
        with open(os.path.join(ROOT, "tests", "fixtures", "hf", model, "base", "model.safetensors"), "rb") as f:
            blob = f.read()
        n = struct.unpack("<Q", blob[:8])[0]
        seeds[model] = struct.pack("<I", len(blob) - 8 - n) + blob[: 8 + n]
    seeds.update(bnb_seeds())
    return seeds


def bnb_image(tensors):
    """A whole file image (data included) from (name, dtype, shape, bytes) tuples, offsets back to back."""
    header, data = {}, b""
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return struct.pack("<I", 0) + safetensors_image(json.dumps(header), 0) + data


def bnb_seeds():
    # bitsandbytes layouts (models/bnb_io.h) of one (4, 8) Linear: 4-bit nf4 with and without double quant,
    # 8-bit, and broken ones (bad JSON, wrong kind, missing fields, packed size off) for the quant-state parser.
    def state(d):
        return json.dumps(d).encode()
    f32 = lambda n: struct.pack(f"<{n}f", *([0.5] * n))
    base = {"quant_type": "nf4", "blocksize": 32, "dtype": "bfloat16", "shape": [4, 8]}
    nested = dict(base, nested_blocksize=256, nested_dtype="float32", nested_offset=0.25)
    w = "model.layers.0.mlp.up_proj.weight"
    four = lambda st, extra=(), packed=16: bnb_image([(w, "U8", [packed, 1], b"\x77" * packed),
                                                     (w + ".absmax", "F32", [1], f32(1)),
                                                     (w + ".quant_map", "F32", [16], f32(16)),
                                                     (w + ".quant_state.bitsandbytes__nf4", "U8", [len(st)], st)] + list(extra))
    seeds = {
        "bnb_nf4": four(state(base)),
        "bnb_nf4_dq": four(state(nested), [(w + ".nested_absmax", "F32", [1], f32(1)),
                                          (w + ".nested_quant_map", "F32", [256], f32(256))]),
        "bnb_bad_json": four(b'{"quant_type": "nf4", "blocksize": 3'),
        "bnb_wrong_kind": four(state(dict(base, quant_type="fp4"))),
        "bnb_no_shape": four(state({k: v for k, v in base.items() if k != "shape"})),
        "bnb_packed_off": four(state(base), packed=15),
        "bnb_int8": bnb_image([("lm.SCB", "F32", [4], f32(4)), ("lm.weight", "I8", [4, 8], b"\x01" * 32),
                               ("lm.weight_format", "U8", [], b"\x00")]),
    }
    return seeds


def config_seeds():
    seeds = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "**", "*.yaml"), recursive=True)):
        with open(path, "rb") as f:
            seeds[os.path.relpath(path, ROOT).replace("/", "_")] = f.read()
    # Leading "--set key=value" lines are overrides.
    seeds["overrides"] = (b"--set training.lr=1e-3\n--set adapter.method=adalora\n--set data.pack=true\n"
                          b"model: m\ndata:\n  train: t.jsonl\nadapter:\n  r: 4\n")
    return seeds


def data_seed(fmt, max_seq_len, lines, pack=False, eos=False, txt=False, split=False, names=False,
              val_fraction=1, special=False):
    """fuzz_data input: two option bytes (see fuzz_data.cpp), then the file content."""
    a = fmt | 8 * pack | 16 * eos | 32 * txt | 64 * split | 128 * names
    b = (max_seq_len - 1) | (val_fraction << 5) | 128 * special
    return bytes([a, b]) + "\n".join(lines).encode() + b"\n"


def data_seeds():
    text, pc, cls, plain, auto = range(5)
    with open(os.path.join(ROOT, "examples", "quickstart", "glosses.jsonl")) as f:
        glosses = [next(f).rstrip("\n") for _ in range(6)]
    j = json.dumps
    texts = [j({"text": t}) for t in ("red cat", "green dog sat", "blue moon\nover the tree", "é ü 日本")]
    labelled = [j({"text": t, "label": l}) for t, l in (("good", "pos"), ("bad", "neg"), ("fine", "pos"))]
    int_labelled = [j({"text": t, "label": l}) for t, l in (("zero", 0), ("one", 1), ("two", 2))]
    prose = ["The sun rose over the quiet hills,", "and the river ran on to the sea.", "", "Ünïcode too: 日本語."]
    return {
        "text": data_seed(text, 32, texts, eos=True),
        "text_pack": data_seed(text, 8, texts, pack=True, eos=True),
        "prompt_completion": data_seed(pc, 24, glosses, eos=True, special=True),
        "prompt_completion_split": data_seed(pc, 32, glosses[:3] + ["\f"] + glosses[3:], split=True, val_fraction=0),
        "auto_jsonl": data_seed(auto, 32, glosses, val_fraction=2),
        "classification": data_seed(cls, 16, labelled, special=True),
        "classification_names": data_seed(cls, 16, int_labelled + [j({"text": "n", "label": "neg"})], names=True),
        "classification_auto": data_seed(auto, 16, int_labelled, val_fraction=3),
        "plain_text": data_seed(plain, 8, prose),
        "plain_text_auto_txt": data_seed(auto, 12, prose, txt=True, pack=True),
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_seeds.py OUT_DIR")
    out = sys.argv[1]
    for target, seeds in (("fuzz_safetensors", safetensors_seeds()), ("fuzz_config", config_seeds()),
                          ("fuzz_data", data_seeds())):
        d = os.path.join(out, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, blob in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)
        for reg in sorted(glob.glob(os.path.join(ROOT, "tests", "fuzz", "regressions", target, "*"))):
            shutil.copy(reg, os.path.join(d, "regression_" + os.path.basename(reg)))


if __name__ == "__main__":
    main()
