#pragma once
// Tensor: a cheap shared handle to {buffer, shape, strides, offset, dtype} plus autograd state.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/buffer.h"
#include "engine/dtype.h"
#include "engine/shape.h"

namespace rf {

struct Node;  // autograd graph node (autograd.h)

struct TensorImpl {
  std::shared_ptr<Buffer> buffer;
  Shape shape;
  Strides strides;     // elements
  int64_t offset = 0;  // elements
  DType dtype = DType::F32;
  uint64_t id = 0;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;     // set on outputs of recorded ops (non-leaf)
  std::shared_ptr<TensorImpl> grad;  // accumulated on leaves by backward()
};

uint64_t next_tensor_id();

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  const Strides& strides() const { return impl_->strides; }
  int64_t offset() const { return impl_->offset; }
  DType dtype() const { return impl_->dtype; }
  int64_t dim() const { return int64_t(impl_->shape.size()); }
  int64_t size(int64_t axis) const;  // negative axes count from the end
  int64_t stride(int64_t axis) const;
  int64_t numel() const { return rf::numel(impl_->shape); }
  bool is_contiguous() const;
  uint64_t id() const { return impl_->id; }
  Buffer& buffer() const { return *impl_->buffer; }
  const std::shared_ptr<Buffer>& buffer_ptr() const { return impl_->buffer; }
  Backend& backend() const { return impl_->buffer->backend(); }
  Device device() const { return backend().device(); }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // Autograd state.
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  Tensor& set_requires_grad(bool r = true);  // leaves only
  bool is_leaf() const { return !impl_->grad_fn; }
  Tensor grad() const { return Tensor(impl_->grad); }
  void set_grad(const Tensor& g) { impl_->grad = g.impl_; }
  void zero_grad() { impl_->grad.reset(); }
  // Same storage, no autograd history.
  Tensor detach() const;

  // Conversions and host transfers (not recorded except to(dtype) on float types).
  Tensor to(DType t) const;
  Tensor to(Device d) const;
  Tensor contiguous() const;
  Tensor clone() const;
  template <class T>
  std::vector<T> to_vector() const;  // converts from any dtype
  double item() const;               // single-element tensors

  // In-place updates, for optimizers and initialisers; refused on tensors that need grad in grad mode.
  Tensor& fill_(double v);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // broadcasts src, converts dtype
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double s);

  // View and op sugar; the free functions in ops.h are the real definitions.
  Tensor reshape(const Shape& s) const;
  Tensor view(const Shape& s) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor t() const { return transpose(-2, -1); }
  Tensor narrow(int64_t axis, int64_t start, int64_t length) const;
  Tensor expand(const Shape& s) const;
  Tensor squeeze(int64_t axis) const;
  Tensor unsqueeze(int64_t axis) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor sum(std::vector<int64_t> axes = {}, bool keepdim = false) const;
  Tensor mean(std::vector<int64_t> axes = {}, bool keepdim = false) const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Creation. Every new tensor gets storage from its backend's (caching) allocator.
Tensor empty(const Shape& s, DType t = DType::F32, Device d = {});
Tensor zeros(const Shape& s, DType t = DType::F32, Device d = {});
Tensor ones(const Shape& s, DType t = DType::F32, Device d = {});
Tensor full(const Shape& s, double v, DType t = DType::F32, Device d = {});
Tensor empty_like(const Tensor& x);  // contiguous, same shape/dtype/device
Tensor zeros_like(const Tensor& x);
Tensor ones_like(const Tensor& x);
Tensor arange(double start, double end, double step = 1.0, DType t = DType::F32, Device d = {});
// Copies host data; data.size() must equal numel(s). Raw 16-bit storage via from_raw.
template <class T>
Tensor from_data(std::span<const T> data, const Shape& s, Device d = {});
template <class T>
Tensor from_data(const std::vector<T>& data, const Shape& s, Device d = {}) {
  return from_data(std::span<const T>(data), s, d);
}
Tensor from_raw(std::span<const std::byte> bytes, const Shape& s, DType t, Device d = {});
// A view sharing x's storage (no autograd): the building block of every view op.
Tensor make_view(const Tensor& x, Shape s, Strides st, int64_t offset);

// Random numbers: one global seed plus a counter that each random op advances by its numel.
void manual_seed(uint64_t seed);
struct RngState {
  uint64_t seed, offset;
};
RngState rng_take(uint64_t count);  // reserves count counters, returns where they start
void rng_restore(RngState s);       // rewinds (or advances) the stream to s, e.g. to replay dropout
Tensor rand(const Shape& s, double lo = 0.0, double hi = 1.0, DType t = DType::F32, Device d = {});
Tensor randn(const Shape& s, double mean = 0.0, double std = 1.0, DType t = DType::F32, Device d = {});
Tensor randperm(int64_t n, Device d = {});  // I64

}  // namespace rf
