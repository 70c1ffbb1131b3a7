"""PyTorch peer for scripts/bench_gpu_matmul: C = A @ B for one shape, f32 with TF32 off and f16,
ten matmuls back to back per timed round (CUDA events), as rankforge times its side.
Usage: torch_matmul.py M N K [bt]   (bt: B is a transposed view, the dX = dY W pattern)"""
import sys

import torch

m, n, k = (int(v) for v in sys.argv[1:4])
bt = len(sys.argv) > 4 and sys.argv[4] == "bt"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
a = torch.rand(m, k, device="cuda") * 2 - 1
b = (torch.rand(n, k, device="cuda") * 2 - 1).t() if bt else torch.rand(k, n, device="cuda") * 2 - 1
reps = 10
for dtype, name in ((torch.float32, "fp32_tf32_off"), (torch.float16, "fp16")):
    x, y = a.to(dtype), b.to(dtype)
    for _ in range(3):
        x @ y
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            x @ y
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3 / reps)
    ts.sort()
    print(f"bench=torch_matmul m={m} n={n} k={k} b_transposed={int(bt)} dtype={name} "
          f"tflops={2 * m * n * k / ts[len(ts) // 2] / 1e12:.2f}")
