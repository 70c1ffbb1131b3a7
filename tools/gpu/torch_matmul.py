"""PyTorch peer for scripts/bench_gpu_matmul: C = A @ B for one shape in each dtype asked for, ten matmuls
back to back per timed round (CUDA events), as rankforge times its side. f32 runs with TF32 off; f16 and
bf16 (cuBLAS on 16-bit operands, f32 accumulation) with the reduced-precision split-K reductions off, as
rankforge's 16-bit matmul accumulates and writes f32.
Usage: torch_matmul.py M N K [bt] [--dtypes f32,f16,bf16]   (bt: B is a transposed view, the dX = dY W pattern)
Prints one line per dtype: bench=torch_matmul m= n= k= b_transposed= dtype=fp32_tf32_off|fp16|bf16 tflops="""
import sys

import torch

args = sys.argv[1:]
dtypes = ["f32", "f16", "bf16"]
if "--dtypes" in args:
    i = args.index("--dtypes")
    dtypes = args[i + 1].split(",")
    del args[i:i + 2]
m, n, k = (int(v) for v in args[:3])
bt = len(args) > 3 and args[3] == "bt"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
a = torch.rand(m, k, device="cuda") * 2 - 1
b = (torch.rand(n, k, device="cuda") * 2 - 1).t() if bt else torch.rand(k, n, device="cuda") * 2 - 1
reps = 10
names = {"f32": (torch.float32, "fp32_tf32_off"), "f16": (torch.float16, "fp16"), "bf16": (torch.bfloat16, "bf16")}
for dt in dtypes:
    dtype, name = names[dt]
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
          f"tflops={2 * m * n * k / ts[len(ts) // 2] / 1e12:.2f}", flush=True)
