#!/usr/bin/env python3
"""bitsandbytes interop (run where torch + transformers + bitsandbytes + CUDA are installed).

usage: bnb_interop.py ROOT
For every ROOT/<case>/model that `rankforge quantize` wrote (scripts/gpu_bundle makes them from the llama
fixture), loads it with transformers' AutoModelForCausalLM (bitsandbytes' Linear4bit / Linear8bitLt) and
compares its logits on ROOT/input.safetensors with rankforge's (ROOT/<case>/rf_logits.safetensors):
max |transformers - rankforge| / max |transformers|. 4-bit cases compute in f32 on both sides (same
dequantized weights, so the bar is 1e-4); int8 runs LLM.int8's int8 matmul in transformers (activations
quantized, threshold 6.0) while rankforge dequantizes W, so its gap is reported, not held to that bar.
Prints one line per case and `bnb_interop worst_4bit=<gap>`; exits 1 when a 4-bit gap passes 1e-4, 2 when
bitsandbytes is missing.
"""
import os, sys

try:
    import torch, transformers, bitsandbytes
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
except ImportError as e:
    print(f"bnb_interop skipped: {e}")
    sys.exit(2)

root = sys.argv[1]
ids = load_file(os.path.join(root, "input.safetensors"))["input_ids"].cuda()
print(f"torch {torch.__version__} transformers {transformers.__version__} bitsandbytes {bitsandbytes.__version__}")
worst = 0.0
for case in sorted(os.listdir(root)):
    d = os.path.join(root, case)
    if not os.path.isdir(os.path.join(d, "model")):
        continue
    m = AutoModelForCausalLM.from_pretrained(os.path.join(d, "model"), device_map="cuda", torch_dtype=torch.float32)
    with torch.no_grad():
        hf = m(input_ids=ids).logits.float().cpu()
    rf = load_file(os.path.join(d, "rf_logits.safetensors"))["logits"].float()
    gap = ((hf - rf).abs().max() / hf.abs().max()).item()
    kinds = sorted({type(x).__name__ for x in m.modules() if "bit" in type(x).__name__.lower()})
    print(f"bnb_interop case={case} modules={','.join(kinds)} gap={gap:.3e}")
    if case != "int8":
        worst = max(worst, gap)
print(f"bnb_interop worst_4bit={worst:.3e}")
sys.exit(1 if worst > 1e-4 else 0)
