# Peer anchor copied unchanged (below this header) from the project's shared/bench/torch_lora_step.py;
# run by scripts/bench_train next to `rankforge bench train`.
"""Peer anchor: one LoRA fine-tuning step of a GPT-2-shaped decoder in PyTorch eager.

Same work as the engine's benchmark: frozen base, LoRA (r=8, alpha=16) on the
attention qkv projection and the MLP, AdamW over adapter parameters only,
cross-entropy over every position. Prints tokens/s (median of timed steps).
usage: python3 torch_lora_step.py [layers d_model heads vocab seq batch steps]
"""
import math, sys, time, statistics
import torch, torch.nn as nn, torch.nn.functional as F

L, D, H, V, T, B, STEPS = [int(x) for x in (sys.argv[1:8] or [12, 768, 12, 50257, 256, 4, 6])]
torch.manual_seed(0)
torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))

class LoRALinear(nn.Module):
    def __init__(self, i, o, r=8, alpha=16):
        super().__init__()
        self.base = nn.Linear(i, o); self.base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(r, i) / math.sqrt(i)); self.B = nn.Parameter(torch.zeros(o, r))
        self.s = alpha / r
    def forward(self, x):
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.s

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = LoRALinear(D, 3 * D), nn.Linear(D, D)
        self.fc, self.out = LoRALinear(D, 4 * D), LoRALinear(4 * D, D)
        for m in (self.ln1, self.ln2, self.proj): m.requires_grad_(False)
    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (z.view(b, t, H, D // H).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") else \
            (q @ k.transpose(-1, -2) / math.sqrt(D // H)).masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf")).softmax(-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, D), nn.Embedding(1024, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L)); self.lnf = nn.LayerNorm(D)
        for m in (self.wte, self.wpe, self.lnf): m.requires_grad_(False)
    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks: x = blk(x)
        return self.lnf(x) @ self.wte.weight.t()

m = GPT()
for name, p in m.named_parameters():
    if p.dim() > 1 and not name.endswith(('.A', '.B')): nn.init.normal_(p, std=0.02)
params = [p for p in m.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
data = torch.randint(0, V, (B, T + 1))
times = []
for step in range(STEPS + 1):
    t0 = time.perf_counter()
    logits = m(data[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, V), data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    if step: times.append(time.perf_counter() - t0)
med = statistics.median(times)
print(f"torch {torch.__version__} threads={torch.get_num_threads()} L={L} D={D} V={V} T={T} B={B} "
      f"trainable={sum(p.numel() for p in params)} loss={loss.item():.3f} step_s={med:.3f} tokens_per_s={B*T/med:.0f}")
