# Peer anchor derived from the project's shared/bench/torch_lora_step.py (GPT-2 model, AUTOCAST=bf16, output
# line); run by scripts/bench_train next to `rankforge bench train`. Added here: BASE_DTYPE (16-bit frozen base),
# CHECKPOINT=1 (activation checkpointing per block), ARCH=llama + CONFIG (a LLaMA-shaped decoder from a Hugging
# Face config.json), and arch= base_dtype= checkpoint= fields at the end of the output line. Also changed:
# tokens_per_s= has one decimal (1.2B-parameter runs make single-digit tokens/s), the position table has
# max(1024, T) rows (T > 1024 used to fail), the tied head is F.linear(h, wte.weight) (the same GEMM as
# h @ wte.weight.t()). With none of the variables set, the GPT-2 run does the shared copy's work with the same
# weights and data (same seed, same order of random draws, same loss).
"""Peer anchor: one LoRA fine-tuning step of a GPT-2- or LLaMA-shaped decoder in PyTorch eager.

Same work as the engine's benchmark: frozen base, LoRA (r=8, alpha=16) on the attention qkv projection and the
MLP (GPT-2) or on every linear layer of the blocks (LLaMA: q,k,v,o,gate,up,down; not lm_head), AdamW over adapter
parameters only, cross-entropy over every position. Prints tokens/s (median of timed steps, after one warm-up).
usage: python3 torch_lora_step.py [layers d_model heads vocab seq batch steps]
       (defaults 12 768 12 50257 256 4 6; with ARCH=llama 0 0 0 0 256 1 4)
Environment:
  THREADS=N       torch.set_num_threads (default 2).
  AUTOCAST=bf16   forward and loss under torch.autocast("cpu", dtype=torch.bfloat16) (oneDNN bf16 GEMMs on CPUs
                  with AVX512_BF16/AMX), loss on logits.float(): the mixed-precision mode a PyTorch user would pick
                  on such a CPU. Default off.
  BASE_DTYPE=f32|bf16|f16
                  dtype of the frozen base: every parameter that is not a LoRA A/B (embeddings, norms, linear
                  weights and biases, lm_head) is created in it, so no f32 copy of the base is ever resident. LoRA
                  A/B, their gradients and AdamW stay f32; activations (the residual stream) stay f32. Where an op
                  meets a frozen weight of another dtype without autocast: a linear layer runs
                  F.linear(x.to(w.dtype), w, b).to(x.dtype) for bf16 (a bf16 GEMM, output back to f32); for f16,
                  which has no CPU GEMM in torch 1.13 (addmm_impl_cpu_ rejects 'Half'), it widens the
                  weight instead, F.linear(x, w.to(x.dtype), b); norm weights and embedding outputs are cast to the
                  activation dtype. Under autocast, linear layers are left to autocast (it casts both operands to
                  bf16). Same dtypes (the f32 default): plain F.linear, as the shared copy. Default f32.
  DDP=1           data parallel under mpirun (scripts/bench_dist): torch.distributed on gloo over loopback
                  (rank and size from OMPI_COMM_WORLD_RANK/SIZE, MASTER_ADDR 127.0.0.1, MASTER_PORT 29517 unless
                  set), the model wrapped in DistributedDataParallel (it all-reduces the LoRA gradients in buckets
                  during backward), each rank its own batch of B rows. Rank 0 prints the line, with ranks=,
                  rank_tokens_per_s= and aggregate_tokens_per_s= added. Default off.
  CHECKPOINT=1    activation checkpointing per transformer block:
                  torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False) (reentrant fallback on a torch
                  without use_reentrant, with the block input made to require grad). Default 0.
  ARCH=gpt2|llama default gpt2. llama needs CONFIG=/path/config.json (a Hugging Face LlamaConfig: hidden_size,
                  intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
                  rms_norm_eps, rope_theta (10000), max_position_embeddings, tie_word_embeddings (false), head_dim
                  (hidden_size / heads)). The model: token embedding; per block RMSNorm -> attention with
                  q/k/v/o_proj (no biases), grouped-query (k/v heads repeated to the query heads), HF half-split
                  rotary embedding (rotate_half) on q and k, causal softmax; residual; RMSNorm -> SwiGLU MLP
                  down(silu(gate(x)) * up(x)) (no biases); residual; final RMSNorm; lm_head Linear(hidden, vocab,
                  bias=False), or the embedding matrix when tie_word_embeddings. Base weights normal(0, 0.02),
                  norm weights 1. The positional d_model/heads/vocab are ignored (the output line says so); a
                  non-zero positional layers overrides num_hidden_layers (a quick test can run 2 layers); seq,
                  batch and steps are taken from the positional args. Rotary tables are computed for the T
                  positions used; max_position_embeddings is read but not enforced.
Output (one line): torch <ver> autocast=.. threads=.. L=.. D=.. V=.. T=.. B=.. trainable=.. loss=.. step_s=..
tokens_per_s=.. arch=.. base_dtype=.. checkpoint=0|1 [config=.. ignored_args=d_model,heads,vocab]
"""
import inspect, json, math, os, sys, time, statistics
import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

def die(msg):
    sys.exit(f"[torch_lora_step] {msg}")

ARCH = os.environ.get("ARCH", "gpt2") or "gpt2"
CONFIG = os.environ.get("CONFIG", "")
AUTOCAST = os.environ.get("AUTOCAST", "")
BASE_DTYPE = os.environ.get("BASE_DTYPE", "f32") or "f32"
CHECKPOINT = os.environ.get("CHECKPOINT", "0") or "0"
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
if ARCH not in ("gpt2", "llama"): die(f"ARCH={ARCH}: expected gpt2 or llama")
if AUTOCAST not in ("", "off", "bf16"): die(f"AUTOCAST={AUTOCAST}: expected bf16 or off")
if BASE_DTYPE not in DTYPES: die(f"BASE_DTYPE={BASE_DTYPE}: expected f32, bf16 or f16")
if CHECKPOINT not in ("0", "1"): die(f"CHECKPOINT={CHECKPOINT}: expected 0 or 1")
if ARCH == "llama" and not CONFIG: die("ARCH=llama needs CONFIG=/path/to/config.json")
if ARCH == "gpt2" and CONFIG: die("CONFIG is for ARCH=llama; GPT-2 shapes come from the positional args")
BASE = DTYPES[BASE_DTYPE]
CKPT = CHECKPOINT == "1"

DEFAULTS = [12, 768, 12, 50257, 256, 4, 6] if ARCH == "gpt2" else [0, 0, 0, 0, 256, 1, 4]
L, D, H, V, T, B, STEPS = [int(x) for x in (sys.argv[1:8] or DEFAULTS)]
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("THREADS", "2")))

def cast(w, x):
    """A frozen weight in the activation's dtype (no copy when they already match)."""
    return w if w is None or w.dtype == x.dtype else w.to(x.dtype)

def base_linear(x, w, b=None):
    """The frozen base GEMM x @ w.T + b; see BASE_DTYPE in the docstring for the mixed-dtype cases."""
    if w.dtype == x.dtype or torch.is_autocast_cpu_enabled():
        return F.linear(x, w, b)
    if w.dtype == torch.bfloat16:
        return F.linear(x.to(w.dtype), w, b).to(x.dtype)
    return F.linear(x, w.to(x.dtype), cast(b, x))

class Linear(nn.Linear):  # frozen, in the base dtype
    def __init__(self, i, o, bias=True):
        super().__init__(i, o, bias=bias, dtype=BASE); self.requires_grad_(False)
    def forward(self, x):
        return base_linear(x, self.weight, self.bias)

class LayerNorm(nn.LayerNorm):  # frozen, in the base dtype
    def __init__(self, d):
        super().__init__(d, dtype=BASE); self.requires_grad_(False)
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, cast(self.weight, x), cast(self.bias, x), self.eps)

class Embedding(nn.Embedding):  # frozen, in the base dtype; rows come out in f32 (the activation dtype)
    def __init__(self, n, d):
        super().__init__(n, d, dtype=BASE); self.requires_grad_(False)
    def forward(self, idx):
        return super().forward(idx).float()

class LoRALinear(nn.Module):
    def __init__(self, i, o, r=8, alpha=16, bias=True):
        super().__init__()
        self.base = Linear(i, o, bias=bias)
        self.A = nn.Parameter(torch.randn(r, i) / math.sqrt(i)); self.B = nn.Parameter(torch.zeros(o, r))
        self.s = alpha / r
    def forward(self, x):
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.s

def causal_attention(q, k, v):
    t = q.shape[-2]
    return F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") else \
        (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf")).softmax(-1) @ v

REENTRANT_ONLY = "use_reentrant" not in inspect.signature(checkpoint).parameters

def run_blocks(blocks, x, *args):
    """Each block in turn; with CHECKPOINT=1 each is recomputed in backward instead of keeping its activations."""
    for blk in blocks:
        if not CKPT:
            x = blk(x, *args)
        elif REENTRANT_ONLY:  # the reentrant variant only back-propagates to adapters if its input requires grad
            x = checkpoint(blk, x if x.requires_grad else x.requires_grad_(), *args)
        else:
            x = checkpoint(blk, x, *args, use_reentrant=False)
    return x

# ---- GPT-2 ----
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = LayerNorm(D), LayerNorm(D)
        self.qkv, self.proj = LoRALinear(D, 3 * D), Linear(D, D)
        self.fc, self.out = LoRALinear(D, 4 * D), LoRALinear(4 * D, D)
    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (z.view(b, t, H, D // H).transpose(1, 2) for z in (q, k, v))
        a = causal_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = Embedding(V, D), Embedding(max(1024, T), D)
        self.blocks = nn.ModuleList(Block() for _ in range(L)); self.lnf = LayerNorm(D)
    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        x = run_blocks(self.blocks, x)
        return base_linear(self.lnf(x), self.wte.weight)  # tied head: lnf(x) @ wte.weight.t()

# ---- LLaMA ----
class RMSNorm(nn.Module):  # HF LlamaRMSNorm: normalize in f32, scale in the input's dtype; frozen, base dtype
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d, dtype=BASE), requires_grad=False); self.eps = eps
    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return cast(self.weight, x) * h.to(x.dtype)

def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)

class LlamaBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        hd, nh, nkv, inter = c["head_dim"], c["heads"], c["kv_heads"], c["intermediate_size"]
        self.hd, self.nh, self.nkv = hd, nh, nkv
        self.input_layernorm = RMSNorm(D, c["eps"]); self.post_attention_layernorm = RMSNorm(D, c["eps"])
        self.q_proj, self.k_proj = LoRALinear(D, nh * hd, bias=False), LoRALinear(D, nkv * hd, bias=False)
        self.v_proj, self.o_proj = LoRALinear(D, nkv * hd, bias=False), LoRALinear(nh * hd, D, bias=False)
        self.gate_proj, self.up_proj = LoRALinear(D, inter, bias=False), LoRALinear(D, inter, bias=False)
        self.down_proj = LoRALinear(inter, D, bias=False)
    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.nkv, self.hd).transpose(1, 2)
        c, s = cos.to(q.dtype), sin.to(q.dtype)
        q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
        rep = self.nh // self.nkv
        if rep > 1:  # HF repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
            k = k[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
            v = v[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
        a = causal_attention(q, k, v)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, self.nh * self.hd))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = Embedding(V, D)
        self.layers = nn.ModuleList(LlamaBlock(c) for _ in range(L)); self.norm = RMSNorm(D, c["eps"])
        self.lm_head = None if c["tie"] else Linear(D, V, bias=False)
        hd = c["head_dim"]
        inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False); self.register_buffer("sin", emb.sin(), persistent=False)
    def forward(self, idx):
        t = idx.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x = run_blocks(self.layers, self.embed_tokens(idx), cos, sin)
        x = self.norm(x)
        return base_linear(x, self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight)

def load_llama_config(path):
    try:
        with open(path) as f: j = json.load(f)
    except (OSError, ValueError) as e:
        die(f"CONFIG={path}: {e}")
    if j.get("model_type", "llama") != "llama": die(f"CONFIG={path}: model_type must be llama for ARCH=llama")
    try:
        hidden, heads = int(j["hidden_size"]), int(j["num_attention_heads"])
        c = {"hidden": hidden, "heads": heads, "kv_heads": int(j.get("num_key_value_heads") or heads),
             "intermediate_size": int(j["intermediate_size"]), "layers": int(j["num_hidden_layers"]),
             "vocab": int(j["vocab_size"]), "eps": float(j.get("rms_norm_eps", 1e-6)),
             "rope_theta": float(j.get("rope_theta", 10000.0)), "tie": bool(j.get("tie_word_embeddings", False)),
             "head_dim": int(j.get("head_dim") or hidden // heads),
             "max_pos": int(j.get("max_position_embeddings", 2048))}
    except KeyError as e:
        die(f"CONFIG={path}: missing {e.args[0]}")
    if heads % c["kv_heads"]: die(f"CONFIG={path}: num_attention_heads {heads} not a multiple of num_key_value_heads {c['kv_heads']}")
    if c["head_dim"] % 2: die(f"CONFIG={path}: head_dim {c['head_dim']} must be even (rotary)")
    return c

extra = ""
if ARCH == "llama":
    cfg = load_llama_config(CONFIG)
    L = L if L > 0 else cfg["layers"]
    D, H, V = cfg["hidden"], cfg["heads"], cfg["vocab"]
    extra = f" config={CONFIG} ignored_args=d_model,heads,vocab"
    m = Llama(cfg)
else:
    m = GPT()
for name, p in m.named_parameters():
    if p.dim() > 1 and not name.endswith(('.A', '.B')): nn.init.normal_(p, std=0.02)
params = [p for p in m.parameters() if p.requires_grad]
DDP = os.environ.get("DDP") == "1"
rank, world = 0, 1
if DDP:
    import torch.distributed as dist
    rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    m = torch.nn.parallel.DistributedDataParallel(m)
    torch.manual_seed(rank)  # each rank its own batch (the model was drawn before)
opt = torch.optim.AdamW(params, lr=1e-4)
data = torch.randint(0, V, (B, T + 1))
times = []
for step in range(STEPS + 1):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST == "bf16"):
        logits = m(data[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V).float(), data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    if step: times.append(time.perf_counter() - t0)
med = statistics.median(times)
if DDP:
    per = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(per, torch.tensor([B * T / med], dtype=torch.float64))
    per = [float(t) for t in per]
    extra += f" ranks={world} rank_tokens_per_s={','.join(f'{v:.1f}' for v in per)} aggregate_tokens_per_s={sum(per):.1f}"
    if rank: sys.exit(0)
print(f"torch {torch.__version__} autocast={AUTOCAST or 'off'} threads={torch.get_num_threads()} L={L} D={D} V={V} T={T} B={B} "
      f"trainable={sum(p.numel() for p in params)} loss={loss.item():.3f} step_s={med:.3f} tokens_per_s={B*T/med:.1f} "
      f"arch={ARCH} base_dtype={BASE_DTYPE} checkpoint={int(CKPT)}{extra}")
