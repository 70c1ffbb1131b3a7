#!/usr/bin/env python3
"""PEFT interop, both ways (run where torch + transformers + peft are installed).

usage: peft_interop.py ROOT
1. rankforge -> PEFT: for every case of ROOT/cases.json (written by prepare_interop.py), loads each adapter
   rankforge wrote with PeftModel.from_pretrained and compares its logits on the fixture's reference input_ids
   with rankforge's (rf_logits_<adapter>.safetensors): max |PEFT - rankforge| / max |PEFT|, bar 1e-4.
2. PEFT -> rankforge: trains a PEFT AdaLoRA adapter on the gpt2 fixture for a few steps with
   update_and_allocate (so rank_pattern is set and tensors are saved cut), and writes it with PEFT's logits to
   ROOT/peft_written/adalora/{adapter, peft_logits.safetensors}; check_peft_written.py compares rankforge there.
Exits non-zero when a gap exceeds 1e-4.
"""
import json, os, sys
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
import peft, transformers
from peft import AdaLoraConfig, PeftModel, get_peft_model

root = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "..", "tests", "fixtures", "hf")
worst = 0.0
print(f"torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__}")


def inputs(arch):
    ref = load_file(os.path.join(fixtures, arch, "reference.safetensors"))
    return {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in ref}


cases = json.load(open(os.path.join(root, "cases.json")))
for case, c in cases.items():
    arch, d = c["arch"], os.path.join(root, case)
    cls = AutoModelForSequenceClassification if arch == "bert" else AutoModelForCausalLM
    for sub in c["adapters"]:
        base = cls.from_pretrained(os.path.join(d, "model"), torch_dtype=torch.float32)
        model = PeftModel.from_pretrained(base, os.path.join(d, "run", sub)).eval()
        with torch.no_grad():
            logits = model(**inputs(arch)).logits.float()
        rf = load_file(os.path.join(d, f"rf_logits_{sub}.safetensors"))["logits"]
        base_model = cls.from_pretrained(os.path.join(d, "model"), torch_dtype=torch.float32).eval()
        with torch.no_grad():
            moved = ((logits - base_model(**inputs(arch)).logits.float()).abs().max() / logits.abs().max()).item()
        gap = ((logits - rf).abs().max() / logits.abs().max()).item()
        worst = max(worst, gap)
        pc = model.peft_config["default"]
        print(f"{case}/{sub}: {pc.peft_type.value} peft-vs-rankforge gap {gap:.2e} (adapter moves logits by {moved:.2e}); "
              f"rank_pattern={getattr(pc, 'rank_pattern', None)}")

# PEFT writes an AdaLoRA adapter for rankforge to read.
torch.manual_seed(0)
out = os.path.join(root, "peft_written", "adalora")
os.makedirs(out, exist_ok=True)
base = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, "gpt2", "base"), torch_dtype=torch.float32)
cfg = AdaLoraConfig(init_r=6, target_r=3, tinit=2, tfinal=4, deltaT=1, total_step=12, lora_alpha=16,
                    target_modules=["c_attn", "c_fc"], task_type="CAUSAL_LM")
model = get_peft_model(base, cfg)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
ids = inputs("gpt2")["input_ids"]
for step in range(12):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    model.base_model.update_and_allocate(step)
    opt.zero_grad()
model.eval()
with torch.no_grad():
    logits = model(input_ids=ids).logits.float().contiguous()
model.save_pretrained(os.path.join(out, "adapter"))
save_file({"logits": logits}, os.path.join(out, "peft_logits.safetensors"))
print(f"peft_written/adalora: rank_pattern={model.peft_config['default'].rank_pattern}")
sys.exit(0 if worst < 1e-4 else 1)
