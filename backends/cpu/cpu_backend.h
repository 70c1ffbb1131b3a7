#pragma once
// The CPU backend: OpenBLAS sgemm/dgemm for every matmul, oneTBB for everything parallel.
// Internal header: kernels reach host memory only through data<T>() below.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/backend.h"
#include "engine/buffer.h"
#include "engine/tensor.h"

namespace rf::cpu {

// Host memory block from the caching allocator; returns itself to the cache when dropped.
class CpuBuffer final : public Buffer {
 public:
  CpuBuffer(Backend& b, size_t bytes, void* data, size_t capacity)
      : Buffer(b, bytes), data_(data), capacity_(capacity) {}
  // Borrowed memory (a file mapping): kept alive by owner, never returned to the cache.
  CpuBuffer(Backend& b, size_t bytes, void* data, std::shared_ptr<const void> owner)
      : Buffer(b, bytes), data_(data), capacity_(0), owner_(std::move(owner)) {}
  ~CpuBuffer() override;
  void* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  void* data_;
  size_t capacity_;
  std::shared_ptr<const void> owner_;
};

// Size-bucketed caching allocator (64-byte aligned) so a training step does not malloc per op.
struct AllocatorStats {
  uint64_t allocs = 0, cache_hits = 0, system_allocs = 0, frees = 0;
  size_t bytes_in_use = 0, bytes_cached = 0, peak_bytes_in_use = 0;
};
AllocatorStats allocator_stats();
void allocator_empty_cache();  // returns cached blocks to the system
void* allocator_get(size_t bytes, size_t* capacity);
void allocator_put(void* p, size_t capacity);

// Typed pointer to element 0 of t (offset applied).
template <class T>
inline T* data(const Tensor& t) {
  return static_cast<T*>(static_cast<CpuBuffer&>(t.buffer()).data()) + t.offset();
}

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }
  Device device() const override { return {DeviceType::CPU, 0}; }
  bool matmul_takes_16bit_b() const override { return true; }   // widened per call (cpu_matmul.cpp)
  bool matmul_takes_16bit_ab() const override { return true; }  // oneDNN, or widened to f32 for OpenBLAS
  bool matmul_16bit_native() const override;                    // oneDNN on AVX512_BF16 or AMX-BF16
  bool attention_takes_16bit(DType t) const override { return t == DType::BF16; }  // bf16 block GEMMs

  std::shared_ptr<Buffer> alloc(size_t bytes) override;
  void upload(Buffer& dst, size_t dst_offset, std::span<const std::byte> src) override;
  void download(const Buffer& src, size_t src_offset, std::span<std::byte> dst) override;
  void synchronize() override {}
  std::shared_ptr<Buffer> wrap_host(void* data, size_t bytes, std::shared_ptr<const void> owner) override;

  // cpu_bench.cpp: cblas_sgemm / oneDNN's own threads, memcpy and a parallel sum as ceilings, the allocator's figures
  Ceiling matmul_ceiling(const Tensor& a, const Tensor& b, Tensor& out) override;
  Ceiling copy_ceiling(const Tensor& src, Tensor& dst, bool one_thread) override;
  Ceiling read_ceiling(const Tensor& src) override;
  int threads() const override;
  void set_option(std::string_view key, std::string_view value) override;
  MemoryStats memory_stats() const override;

  // cpu_elementwise.cpp
  void fill(Tensor& out, double v) override;
  void copy(const Tensor& src, Tensor& out) override;
  void rand(Tensor& out, RandDist dist, uint64_t seed, uint64_t offset, double a, double b) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out, double a, double b) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
  // cpu_reduce_index.cpp
  void reduce(ReduceOp op, const Tensor& x, Tensor& out) override;
  void index_select(const Tensor& x, int64_t axis, const Tensor& ids, Tensor& out) override;
  void index_add(const Tensor& src, int64_t axis, const Tensor& ids, Tensor& out) override;
  void gather(const Tensor& x, int64_t axis, const Tensor& idx, Tensor& out) override;
  void scatter_add(const Tensor& src, int64_t axis, const Tensor& idx, Tensor& out) override;
  void topk(const Tensor& x, int64_t k, Tensor& values, Tensor& indices) override;
  // cpu_matmul.cpp
  void matmul(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) override;
  // cpu_fused.cpp
  void softmax(const Tensor& x, Tensor& y, bool log) override;
  void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) override;
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, Tensor& y, Tensor& mean,
                  Tensor& rstd) override;
  void layer_norm_bwd(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw, Tensor& db) override;
  void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) override;
  void rms_norm_bwd(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                    Tensor& dw) override;
  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& y, bool inverse) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss,
                     Tensor& lse) override;
  void cross_entropy_bwd(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                         const Tensor& dloss, Tensor& dlogits) override;
  void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWArgs& args) override;
  // cpu_sparse_ops.cpp
  void spmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, const Tensor& x, Tensor& y,
            bool accumulate) override;
  void sddmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& a, const Tensor& b,
             Tensor& out_values) override;
  void csr_add_dense(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, Tensor& d,
                     float alpha) override;
  // cpu_quant.cpp
  void quant_matmul(const Tensor& x, const QuantWeight& w, bool trans, Tensor& out, float beta) override;
  void dequantize(const QuantWeight& w, Tensor& out) override;
  // cpu_attention.cpp
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, const AttnArgs& args,
                 Tensor& o, Tensor& lse) override;
  void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, const AttnArgs& args,
                     const Tensor& o, const Tensor& lse, const Tensor& dout, Tensor& dq, Tensor& dk,
                     Tensor& dv) override;
};

// Threads used by oneTBB arenas and OpenBLAS (see cpu_matmul.cpp for the policy).
int num_threads();

}  // namespace rf::cpu
