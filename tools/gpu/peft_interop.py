#!/usr/bin/env python3
"""Loads adapters written by rankforge into Hugging Face PEFT and compares logits.

usage: peft_interop.py ROOT   (ROOT/<arch>/{model, run/adapter, rf_logits.safetensors} for gpt2, llama, bert;
input_ids from tests/fixtures/hf/<arch>/reference.safetensors). Prints one line per architecture with the
max |PEFT - rankforge| / max |PEFT| gap and exits non-zero when a gap exceeds 1e-4.
"""
import os, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from peft import PeftModel
import peft, transformers

root = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "..", "tests", "fixtures", "hf")
worst = 0.0
print(f"torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__}")
for arch in ("gpt2", "llama", "bert"):
    d = os.path.join(root, arch)
    cls = AutoModelForSequenceClassification if arch == "bert" else AutoModelForCausalLM
    base = cls.from_pretrained(os.path.join(d, "model"), torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(d, "run", "adapter")).eval()
    ids = load_file(os.path.join(fixtures, arch, "reference.safetensors"))["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    rf = load_file(os.path.join(d, "rf_logits.safetensors"))["logits"]
    base_model = cls.from_pretrained(os.path.join(d, "model"), torch_dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base_model(input_ids=ids).logits.float()
    gap = ((logits - rf).abs().max() / logits.abs().max()).item()
    moved = ((logits - base_logits).abs().max() / logits.abs().max()).item()
    worst = max(worst, gap)
    print(f"{arch}: peft-vs-rankforge gap {gap:.2e} (adapter moves logits by {moved:.2e}); "
          f"config {model.peft_config['default'].use_dora=} {model.peft_config['default'].use_rslora=} "
          f"rank_pattern={model.peft_config['default'].rank_pattern}")
sys.exit(0 if worst < 1e-4 else 1)
