#pragma once
// The Vulkan backend: every Backend method as compute shaders on one queue. Internal header.
// Tensors live in sub-allocated device memory (vk_memory.cpp); work is recorded into batched
// command buffers (vk_stream.cpp) and the host waits only when it reads.
#include <memory>
#include <string>
#include <vector>

#include "backends/vulkan/vk_runtime.h"
#include "engine/backend.h"
#include "engine/buffer.h"
#include "engine/tensor.h"

namespace rf::vk {

// Everything a device needs; buffers keep it alive, so tensors may outlive the backend object.
struct Runtime {
  explicit Runtime(int index) : ctx(index), mem(ctx), stream(ctx, mem) {}
  Context ctx;
  Allocator mem;
  Stream stream;
  bool guard = false;
};

class VulkanBuffer final : public Buffer {
 public:
  VulkanBuffer(Backend& b, std::shared_ptr<Runtime> rt, size_t bytes);
  ~VulkanBuffer() override;
  const Allocation& allocation() const { return a_; }

 private:
  std::shared_ptr<Runtime> rt_;
  Allocation a_;
};

// A tensor bound to a shader: the buffer range it touches and its element offset inside it.
struct Arg {
  Binding b;
  uint32_t off = 0;
};

// Dims of one iteration space shared by several operands after dropping size-1 dims and merging
// dims that are contiguous for every operand (innermost last, at most 6).
struct Collapsed {
  int ndim = 0;
  uint32_t shape[6] = {};
  uint32_t strides[5][6] = {};
};
Collapsed collapse(const Shape& shape, std::initializer_list<const Strides*> strides);

class VulkanBackend final : public Backend {
 public:
  explicit VulkanBackend(int index);
  ~VulkanBackend() override;
  std::string_view name() const override { return name_; }
  Device device() const override { return {DeviceType::Vulkan, index_}; }
  Runtime& runtime() { return *rt_; }
  // Pads every allocation with sentinels and counts overwritten ones (see guard_violations).
  void set_guard(bool on);
  uint64_t guard_violations() const { return rt_->mem.stats().guard_violations; }

  std::shared_ptr<Buffer> alloc(size_t bytes) override;
  void upload(Buffer& dst, size_t dst_offset, std::span<const std::byte> src) override;
  void download(const Buffer& src, size_t src_offset, std::span<std::byte> dst) override;
  void synchronize() override;
  // One vkCmdCopyBuffer of the whole tensor, recorded on the stream (one_thread is ignored).
  Ceiling copy_ceiling(const Tensor& src, Tensor& dst, bool one_thread) override;

  // vk_ops_elementwise.cpp
  void fill(Tensor& out, double v) override;
  void copy(const Tensor& src, Tensor& out) override;
  void rand(Tensor& out, RandDist dist, uint64_t seed, uint64_t offset, double a, double b) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out, double a, double b) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
  void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWArgs& args) override;
  // vk_ops_sparse.cpp
  void spmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, const Tensor& x, Tensor& y,
            bool accumulate) override;
  void sddmm(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& a, const Tensor& b,
             Tensor& out_values) override;
  void csr_add_dense(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& values, Tensor& d,
                     float alpha) override;
  // vk_ops_quant.cpp
  void quant_matmul(const Tensor& x, const QuantWeight& w, bool trans, Tensor& out, float beta = 0.0f) override;
  void dequantize(const QuantWeight& w, Tensor& out) override;
  // vk_ops_matmul.cpp: f32; f32 a with 16-bit b; a and b both F16 or both BF16 (f32 accumulate and out)
  void matmul(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) override;
  bool matmul_takes_16bit_b() const override { return true; }
  bool matmul_takes_16bit_ab() const override { return rt_->ctx.info().storage16; }
  // vk_ops_reduce.cpp
  void reduce(ReduceOp op, const Tensor& x, Tensor& out) override;
  void index_select(const Tensor& x, int64_t axis, const Tensor& ids, Tensor& out) override;
  void index_add(const Tensor& src, int64_t axis, const Tensor& ids, Tensor& out) override;
  void gather(const Tensor& x, int64_t axis, const Tensor& idx, Tensor& out) override;
  void scatter_add(const Tensor& src, int64_t axis, const Tensor& idx, Tensor& out) override;
  void topk(const Tensor& x, int64_t k, Tensor& values, Tensor& indices) override;
  // vk_ops_fused.cpp
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
  // 16-bit q, k, v (and dout) widened on load, where the device has 16-bit storage (all but ancient ones).
  bool attention_takes_16bit(DType t) const override {
    return (t == DType::F16 || t == DType::BF16) && rt_->ctx.info().storage16;
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, const AttnArgs& args,
                 Tensor& o, Tensor& lse) override;
  void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, const AttnArgs& args,
                     const Tensor& o, const Tensor& lse, const Tensor& dout, Tensor& dq, Tensor& dk,
                     Tensor& dv) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss,
                     Tensor& lse) override;
  void cross_entropy_bwd(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                         const Tensor& dloss, Tensor& dlogits) override;

  // Helpers shared by the op files.
  Arg arg(const Tensor& t, bool write = false) const;
  Arg err_arg() const;  // the 4-byte error flag kernels set on bad ids
  // Runs shader `name` with these bindings and push block; groups default to a 1-D grid.
  template <class P>
  void run(std::string_view name, std::initializer_list<Arg> args, const P& push, uint32_t gx, uint32_t gy = 1,
           uint32_t gz = 1) {
    run_raw(name, args, &push, sizeof(P), gx, gy, gz);
  }
  void run_raw(std::string_view name, std::initializer_list<Arg> args, const void* push, size_t push_bytes, uint32_t gx,
               uint32_t gy, uint32_t gz);
  uint32_t groups_for(uint64_t n) const;                        // grid-stride elementwise kernels
  std::pair<uint32_t, uint32_t> row_grid(uint64_t rows) const;  // one workgroup per row, x then y
  std::string row_kernel(std::string_view base) const;          // "_sg" variant where the device allows
  Tensor dense(const Tensor& t);                                // contiguous (a copy only when needed)
  Tensor last_dense(const Tensor& t);                           // last dim contiguous (copy only when needed)

 private:
  void check_errors();  // throws when a kernel flagged a bad index since the last check
  std::shared_ptr<Runtime> rt_;
  int index_;
  std::string name_;
  std::shared_ptr<Buffer> err_;
  bool subgroup_ = false;
  mutable bool err_pending_ = false;  // a kernel that can flag errors ran since the last check
};

void need_f32(const Tensor& t, const char* op);
// A size or stride as the uint32 shaders index with; throws when it does not fit.
uint32_t to_u32(int64_t v, const char* what = "size");

}  // namespace rf::vk
