"""PyTorch peer for scripts/bench_gpu_matmul: f32 with TF32 off, and f16, timed with CUDA events."""
import sys

import torch

n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
torch.backends.cuda.matmul.allow_tf32 = False
a = torch.rand(n, n, device="cuda") * 2 - 1
b = torch.rand(n, n, device="cuda") * 2 - 1
for dtype, name in ((torch.float32, "fp32_tf32_off"), (torch.float16, "fp16")):
    x, y = a.to(dtype), b.to(dtype)
    for _ in range(3):
        x @ y
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        x @ y
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    ts.sort()
    print(f"bench=torch_matmul n={n} dtype={name} tflops={2 * n**3 / ts[len(ts) // 2] / 1e12:.2f}")
