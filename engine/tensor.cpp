#include "engine/tensor.h"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace rf {

int64_t Tensor::size(int64_t axis) const { return impl_->shape[size_t(norm_axis(axis, dim(), "size"))]; }
int64_t Tensor::stride(int64_t axis) const { return impl_->strides[size_t(norm_axis(axis, dim(), "stride"))]; }

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (size_t i = impl_->shape.size(); i-- > 0;) {
    if (impl_->shape[i] == 1) continue;  // any stride is fine for size-1 dims
    if (impl_->strides[i] != expect) return false;
    expect *= impl_->shape[i];
  }
  return true;
}

Tensor& Tensor::set_requires_grad(bool r) {
  if (!is_leaf()) throw std::invalid_argument("[requires_grad] can only be set on leaf tensors; use detach() first");
  if (r && !is_float(dtype()))
    throw std::invalid_argument(
        fmt::format("[requires_grad] only float tensors can require grad, got {}", dtype_name(dtype())));
  impl_->requires_grad = r;
  return *this;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->buffer = impl_->buffer;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->offset = impl_->offset;
  impl->dtype = impl_->dtype;
  impl->id = next_tensor_id();
  return Tensor(std::move(impl));
}

Tensor Tensor::to(DType t) const { return cast(*this, t); }

Tensor Tensor::to(Device d) const {
  if (device() == d) return *this;
  // Cross-device moves go through host memory; the result is a new leaf (not recorded).
  Tensor src = contiguous().detach();
  std::vector<std::byte> host(size_t(src.numel()) * dtype_size(src.dtype()));
  src.backend().download(src.buffer(), size_t(src.offset()) * dtype_size(src.dtype()), host);
  return from_raw(host, shape(), dtype(), d);
}

Tensor Tensor::contiguous() const { return rf::contiguous(*this); }
Tensor Tensor::clone() const { return rf::clone(*this); }

template <class T>
std::vector<T> Tensor::to_vector() const {
  // Other devices hand over their own dtype; conversions (to f64 too) then happen on the CPU.
  if (device().type != DeviceType::CPU) return to(Device{}).to_vector<T>();
  Tensor src = *this;
  if (src.dtype() != DTypeOf<T>::value || !src.is_contiguous()) {
    NoGradGuard g;
    Tensor c = empty(shape(), DTypeOf<T>::value, device());
    backend().copy(src, c);
    src = c;
  }
  std::vector<T> out(size_t(src.numel()));
  src.backend().download(src.buffer(), size_t(src.offset()) * sizeof(T),
                         std::as_writable_bytes(std::span<T>(out.data(), out.size())));
  return out;
}
template <>
std::vector<bool> Tensor::to_vector<bool>() const {
  std::vector<int32_t> v = to_vector<int32_t>();
  return std::vector<bool>(v.begin(), v.end());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

double Tensor::item() const {
  if (numel() != 1)
    throw std::invalid_argument(fmt::format("[item] expects one element, got shape {}", shape_str(shape())));
  return to_vector<double>()[0];
}

namespace {
void check_inplace(const Tensor& t, const char* op) {
  if (grad_enabled() && t.requires_grad())
    throw std::invalid_argument(
        fmt::format("[{}] in-place update of a tensor that requires grad; use NoGradGuard", op));
  t.buffer().bump_version();
}
}  // namespace

Tensor& Tensor::fill_(double v) {
  check_inplace(*this, "fill_");
  if (is_contiguous()) {
    backend().fill(*this, v);
  } else {
    Tensor tmp = full(shape(), v, dtype(), device());
    backend().copy(tmp, *this);
  }
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  Shape bs = broadcast_shapes(src.shape(), shape(), "copy_");
  if (bs != shape())
    throw std::invalid_argument(
        fmt::format("[copy_] cannot broadcast {} into {}", shape_str(src.shape()), shape_str(shape())));
  Tensor s = src.device() == device() ? src : src.to(device());
  backend().copy(rf::expand(s.detach(), shape()), *this);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace(*this, "add_");
  NoGradGuard g;
  Tensor o = other.detach();
  if (o.dtype() != dtype()) o = cast(o, dtype());
  if (alpha != 1.0) o = unary_raw(UnaryOp::MulS, o, alpha);
  Tensor ob = rf::expand(o, shape());
  if (is_contiguous()) {
    backend().binary(BinaryOp::Add, *this, ob, *this);
  } else {  // kernels write contiguous outputs: go through a temporary
    Tensor tmp = empty(shape(), dtype(), device());
    backend().binary(BinaryOp::Add, *this, ob, tmp);
    backend().copy(tmp, *this);
  }
  return *this;
}

Tensor& Tensor::mul_(double s) {
  check_inplace(*this, "mul_");
  if (is_contiguous()) {
    backend().unary(UnaryOp::MulS, *this, *this, s, 0.0);
  } else {
    Tensor tmp = empty(shape(), dtype(), device());
    backend().unary(UnaryOp::MulS, *this, tmp, s, 0.0);
    backend().copy(tmp, *this);
  }
  return *this;
}

Tensor Tensor::reshape(const Shape& s) const { return rf::reshape(*this, s); }
Tensor Tensor::view(const Shape& s) const { return rf::view(*this, s); }
Tensor Tensor::permute(const std::vector<int64_t>& dims) const { return rf::permute(*this, dims); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return rf::transpose(*this, a, b); }
Tensor Tensor::narrow(int64_t axis, int64_t start, int64_t length) const {
  return rf::narrow(*this, axis, start, length);
}
Tensor Tensor::expand(const Shape& s) const { return rf::expand(*this, s); }
Tensor Tensor::squeeze(int64_t axis) const { return rf::squeeze(*this, axis); }
Tensor Tensor::unsqueeze(int64_t axis) const { return rf::unsqueeze(*this, axis); }
Tensor Tensor::flatten(int64_t start, int64_t end) const { return rf::flatten(*this, start, end); }
Tensor Tensor::sum(std::vector<int64_t> axes, bool keepdim) const { return rf::sum(*this, std::move(axes), keepdim); }
Tensor Tensor::mean(std::vector<int64_t> axes, bool keepdim) const { return rf::mean(*this, std::move(axes), keepdim); }

}  // namespace rf
