#pragma once
// The backend interface: a few dozen enum-dispatched methods (not one virtual per op per dtype).
// Rules: the front end infers shapes and allocates every output; outputs are contiguous unless a
// method says otherwise; inputs may have any strides (0 = broadcast) and offsets; all float
// kernels support F32 and F64 (F64 may be CPU only); F16/BF16 only travel through copy(), and
// into matmul where a backend says it takes them (matmul_takes_16bit_b / _ab).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/dtype.h"
#include "engine/op_list.h"
#include "engine/shape.h"

namespace rf {

class Buffer;
class Tensor;
struct QuantWeight;

enum class DeviceType : uint8_t { CPU, Vulkan, Count };
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device&) const = default;
};
std::string_view device_name(DeviceType t);
// "cpu", "vulkan" (the default Vulkan device: the first GPU; a CPU-type one only when
// RANKFORGE_VULKAN_ALLOW_CPU=1) or "vulkan:N". Throws a one-line error for anything else.
// cpu, vulkan, vulkan:N, or vulkan:auto (the device of this process's local MPI rank, rf::dist).
Device parse_device(std::string_view spec);
std::string device_str(Device d);  // "cpu", "vulkan:0"
// RANKFORGE_DEVICE if set, else the CPU.
Device default_device();

// Elementwise ops, from the one list in engine/op_list.h. a/b are scalar parameters where the op has them.
#define RF_ENUM_ENTRY(e, s) e,
enum class UnaryOp : uint8_t { RF_UNARY_OPS(RF_ENUM_ENTRY) Count };
// Comparisons write Bool outputs; the rest write the input dtype.
enum class BinaryOp : uint8_t { RF_BINARY_OPS(RF_ENUM_ENTRY) Count };
#undef RF_ENUM_ENTRY
inline bool is_comparison(BinaryOp op) { return op >= BinaryOp::Eq; }
// Reduce over every axis where out has extent 1 and x does not (out keeps the rank of x).
// ArgMax reduces exactly one axis and writes I64.
enum class ReduceOp : uint8_t { Sum, Mean, Max, Min, ArgMax, Count };
enum class RandDist : uint8_t { Uniform, Normal, Count };

struct AttnArgs {
  bool causal = false;  // query i sees keys j <= i + (Tk - Tq): aligned bottom-right
  double scale = 1.0;   // usually 1/sqrt(D); double so f64 checks see no f32 rounding
};

struct AdamWArgs {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  int64_t step = 1;  // 1-based, for bias correction
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual Device device() const = 0;

  // Memory. alloc may return cached blocks; contents are undefined.
  virtual std::shared_ptr<Buffer> alloc(size_t bytes) = 0;
  virtual void upload(Buffer& dst, size_t dst_offset, std::span<const std::byte> src) = 0;
  virtual void download(const Buffer& src, size_t src_offset, std::span<std::byte> dst) = 0;
  virtual void synchronize() = 0;
  // Wraps host memory owned by `owner` (e.g. a file mapping) without copying; nullptr when the
  // backend cannot address host memory directly (then the caller uploads a copy).
  virtual std::shared_ptr<Buffer> wrap_host(void* data, size_t bytes, std::shared_ptr<const void> owner) {
    return nullptr;
  }

  // Fill a contiguous tensor of any dtype with v.
  virtual void fill(Tensor& out, double v) = 0;
  // Strided src -> strided out (same shape), converting between any two dtypes.
  virtual void copy(const Tensor& src, Tensor& out) = 0;
  // Counter-based (Philox4x32-10): element i of out uses counter (offset + i) and key seed, so the
  // numbers are the same on every backend. Uniform in [a, b), or Normal(mean a, std b).
  virtual void rand(Tensor& out, RandDist dist, uint64_t seed, uint64_t offset, double a, double b) = 0;

  // Elementwise. out may alias x/a/b when layouts are equal (in-place updates).
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& out, double a = 0, double b = 0) = 0;
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b,
                      Tensor& out) = 0;  // a, b pre-broadcast to out.shape via strides
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b,
                     Tensor& out) = 0;  // cond Bool, all pre-broadcast
  virtual void reduce(ReduceOp op, const Tensor& x, Tensor& out) = 0;

  // out (..., M, N) = alpha * a (..., M, K) @ b (..., K, N) + beta * out.
  // Batch dims of a and b are pre-broadcast to out's (stride 0 allowed). Each operand matrix has
  // either stride(-1) == 1 (row-major) or stride(-2) == 1 (transposed): no copies for transposes.
  virtual void matmul(const Tensor& a, const Tensor& b, Tensor& out, float alpha = 1.0f, float beta = 0.0f) = 0;
  // Whether matmul also takes an F16/BF16 b with f32 a and out (16-bit frozen weights, f32
  // accumulate). Where it does not, the front end upcasts b first.
  virtual bool matmul_takes_16bit_b() const { return false; }
  // Whether matmul takes BF16 (or F16) a and b of the same dtype with an F32 out: the 16-bit GEMMs
  // of mixed precision (engine/autocast.h). Where it does not, autocast leaves GEMMs in f32.
  virtual bool matmul_takes_16bit_ab() const { return false; }
  // Whether those 16-bit GEMMs run on native 16-bit dot products (not widened to f32): what
  // precision `auto` asks.
  virtual bool matmul_16bit_native() const { return false; }
  // Whether attention takes q, k, v (and dout) of 16-bit dtype t (BF16 or F16) with F32 o, lse and
  // gradients: its two products on 16-bit operands with f32 accumulation (autocast). Where it does
  // not, autocast leaves attention in f32.
  virtual bool attention_takes_16bit(DType t) const { return false; }

  // Indexing. ids: 1-D I32/I64. index_add adds into an existing out; gather/scatter_add follow torch.
  virtual void index_select(const Tensor& x, int64_t axis, const Tensor& ids, Tensor& out) = 0;
  virtual void index_add(const Tensor& src, int64_t axis, const Tensor& ids, Tensor& out) = 0;
  virtual void gather(const Tensor& x, int64_t axis, const Tensor& idx, Tensor& out) = 0;
  virtual void scatter_add(const Tensor& src, int64_t axis, const Tensor& idx, Tensor& out) = 0;
  // Largest k along the last axis, sorted descending; indices I64.
  virtual void topk(const Tensor& x, int64_t k, Tensor& values, Tensor& indices) = 0;

  // Fused pairs over the last axis. Each forward saves what its backward twin needs.
  virtual void softmax(const Tensor& x, Tensor& y, bool log) = 0;
  virtual void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) = 0;
  // w, b: (C) and b may be undefined; mean, rstd: (rows) F32/F64 like x.
  virtual void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean,
                          Tensor& rstd) = 0;
  // dw, db are accumulated into (+=) when defined; pass undefined to skip them.
  virtual void layer_norm_bwd(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                              const Tensor& dy, Tensor& dx, Tensor& dw, Tensor& db) = 0;
  virtual void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) = 0;
  virtual void rms_norm_bwd(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                            Tensor& dw) = 0;
  // HF half-split rotary: y = x * cos + rotate_half(x) * sin. x (B, H, T, D); cos, sin (T, D) or
  // (B, T, D) with equal halves. inverse uses -sin, which is exactly the backward.
  virtual void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& y, bool inverse) = 0;
  // Scaled dot-product attention, flash style: saves only lse (B, H, Tq), never (Tq, Tk) scores.
  // q (B, H, Tq, D), k (B, Hk, Tk, D), v (B, Hk, Tk, Dv) with H % Hk == 0 (GQA); last dims
  // contiguous. key_mask: undefined or (B, Tk) Bool, true = attend. o (B, H, Tq, Dv).
  // A query row with no visible key gets o = 0 and lse = -inf.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                         const AttnArgs& args, Tensor& o, Tensor& lse) = 0;
  virtual void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                             const AttnArgs& args, const Tensor& o, const Tensor& lse, const Tensor& dout, Tensor& dq,
                             Tensor& dk, Tensor& dv) = 0;
  // logits (N, C), targets (N) I64. loss (N): lse - logit[target], 0 where target == ignore_index.
  virtual void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss,
                             Tensor& lse) = 0;
  // dlogits = dloss[n] * (softmax - onehot), rows with ignore_index get 0.
  virtual void cross_entropy_bwd(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                                 const Tensor& dloss, Tensor& dlogits) = 0;
  // Sparse S in CSR (RoSA's adapter, specs/methods.md §3.2): row_ptr (rows + 1) and col_idx (nnz) are
  // contiguous I32 with columns strictly ascending per row (validated on the host when the pattern is
  // built); values (nnz) contiguous, F32 (F64 may be CPU only). Sums run in a fixed order per output,
  // so results do not depend on thread counts or scheduling.
  // y (rows, n) = S (rows, cols) @ x (cols, n), or y += S @ x with accumulate; x, y contiguous.
  virtual void spmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, const Tensor& x, Tensor& y,
                    bool accumulate) = 0;
  // out_values[e] = dot(a[row(e), :], b[col(e), :]) for every stored entry e; a (rows, k), b (cols, k)
  // and out_values (nnz) contiguous. RoSA's dS = (dO^T X)|_M is a = dO^T (out, T), b = X^T (in, T).
  virtual void sddmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& a, const Tensor& b,
                     Tensor& out_values) = 0;
  // d (rows, cols) contiguous: d[i, col(e)] += alpha * values[e] for every stored entry e (W0 + S).
  virtual void csr_add_dense(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, Tensor& d,
                             float alpha) = 0;
  // In-place AdamW on contiguous p, m, v with gradient g (decoupled weight decay).
  virtual void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWArgs& args) = 0;

  // Quantized frozen weights (engine/quant_weight.h), dequantized a tile at a time inside the GEMM:
  // out = x @ W^T (x (M, cols), out (M, rows)), or out = x @ W when trans (x (M, rows), out (M, cols)).
  // x is contiguous F32 or BF16; both meet in w.compute (x rounded to bf16 for BF16), accumulate in
  // f32, and out (F32, contiguous) = result + beta * out. The defaults throw: a backend without them
  // cannot hold a quantized model.
  virtual void quant_matmul(const Tensor& x, const QuantWeight& w, bool trans, Tensor& out, float beta = 0.0f);
  // out (rows, cols) F32, contiguous: the dequantized weight (merges, PiSSA, DoRA's norm).
  virtual void dequantize(const QuantWeight& w, Tensor& out);

  // Benchmarks and diagnostics. A ceiling is the vendor library run on the same buffers, what
  // `rankforge bench` measures an engine op against; engine_provider/engine_impl say what the
  // engine's own call dispatches to for the same operands.
  struct Ceiling {
    std::string name, engine_provider, engine_impl;
    std::function<void()> run;
  };
  // out (m, n) f32 = a (m, k) @ b (k, n), row-major, f32 or bf16 operands. Throws "[bench] ..."
  // where the backend has no library call for it.
  virtual Ceiling matmul_ceiling(const Tensor& a, const Tensor& b, Tensor& out);
  // dst = src (same bytes, contiguous): the library copy over the backend's threads, or one thread
  // (a GPU backend has one way to copy and ignores one_thread). May only record the copy: a timed
  // region ends with synchronize().
  virtual Ceiling copy_ceiling(const Tensor& src, Tensor& dst, bool one_thread);
  // Reads every byte of src (contiguous) once, a sum whose result is discarded, over the backend's
  // threads: the read bandwidth that bounds read-mostly kernels (SpMM, SDDMM). Throws
  // "[bench] <backend>: no read ceiling" where the backend has none.
  virtual Ceiling read_ceiling(const Tensor& src);
  virtual int threads() const { return 1; }  // worker threads its kernels fan out over
  // Named tuning knobs for benches and tests; throws "[<backend>] unknown option ..." for any other.
  // CPU: matmul_provider = auto | openblas | dnnl (the f32 GEMM library).
  virtual void set_option(std::string_view key, std::string_view value);
  struct MemoryStats {
    size_t bytes_in_use = 0, peak_bytes_in_use = 0, bytes_cached = 0;
  };
  virtual MemoryStats memory_stats() const { return {}; }
};

// Registry. Each backend describes itself in one entry (<name>_backend_entry() in backends/<name>/);
// the build generates the list of the backends it links (builtin_backends.cpp, meson.build), so the
// engine names none of them. The CPU backend is always built. register_backend adds one at run time
// (a backend in the embedding program).
using BackendFactory = std::unique_ptr<Backend> (*)(int index);
struct BackendEntry {
  DeviceType type = DeviceType::CPU;
  BackendFactory make = nullptr;
  std::string_view summary;                          // for --version: "cpu (oneDNN, OpenBLAS, oneTBB)"
  int (*default_index)() = nullptr;                  // the device a bare name picks; throws a one-line reason when none
                                                     // is usable; null: index 0
  std::vector<std::string> (*describe)() = nullptr;  // one line per device ("vulkan:0: ..."), or why none
  // The device of the local_rank-th process on a node (`vulkan:auto` under mpirun): one per rank,
  // round robin over the usable devices; null: default_index.
  int (*local_index)(int local_rank) = nullptr;
};
void register_backend(const BackendEntry& entry);  // replaces an earlier entry of the same type
Backend& backend_for(Device d);
bool backend_available(DeviceType type);            // registered and a usable device exists
std::vector<std::string> describe_devices();        // every backend type's lines, "<name>: not in this build" if absent
std::vector<std::string_view> backend_summaries();  // registered backends, in DeviceType order

}  // namespace rf
