#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace rf {

uint64_t next_tensor_id() {
  static std::atomic<uint64_t> counter{1};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

Tensor empty(const Shape& s, DType t, Device d) {
  for (int64_t n : s)
    if (n < 0) throw std::invalid_argument(fmt::format("[empty] negative dimension in shape {}", shape_str(s)));
  auto impl = std::make_shared<TensorImpl>();
  impl->buffer = backend_for(d).alloc(size_t(numel(s)) * dtype_size(t));
  impl->shape = s;
  impl->strides = contiguous_strides(s);
  impl->dtype = t;
  impl->id = next_tensor_id();
  return Tensor(std::move(impl));
}

Tensor full(const Shape& s, double v, DType t, Device d) {
  Tensor x = empty(s, t, d);
  x.backend().fill(x, v);
  return x;
}
Tensor zeros(const Shape& s, DType t, Device d) { return full(s, 0.0, t, d); }
Tensor ones(const Shape& s, DType t, Device d) { return full(s, 1.0, t, d); }
Tensor empty_like(const Tensor& x) { return empty(x.shape(), x.dtype(), x.device()); }
Tensor zeros_like(const Tensor& x) { return zeros(x.shape(), x.dtype(), x.device()); }
Tensor ones_like(const Tensor& x) { return ones(x.shape(), x.dtype(), x.device()); }

Tensor from_raw(std::span<const std::byte> bytes, const Shape& s, DType t, Device d) {
  size_t need = size_t(numel(s)) * dtype_size(t);
  if (bytes.size() != need)
    throw std::invalid_argument(fmt::format("[from_data] {} bytes given for shape {} of {} ({} bytes needed)",
                                            bytes.size(), shape_str(s), dtype_name(t), need));
  Tensor x = empty(s, t, d);
  if (need) x.backend().upload(x.buffer(), 0, bytes);
  return x;
}

template <class T>
Tensor from_data(std::span<const T> data, const Shape& s, Device d) {
  return from_raw(std::as_bytes(data), s, DTypeOf<T>::value, d);
}
template Tensor from_data<float>(std::span<const float>, const Shape&, Device);
template Tensor from_data<double>(std::span<const double>, const Shape&, Device);
template Tensor from_data<int32_t>(std::span<const int32_t>, const Shape&, Device);
template Tensor from_data<int64_t>(std::span<const int64_t>, const Shape&, Device);
template <>
Tensor from_data<bool>(std::span<const bool> data, const Shape& s, Device d) {
  std::vector<uint8_t> bytes(data.begin(), data.end());
  return from_raw(std::as_bytes(std::span<const uint8_t>(bytes)), s, DType::Bool, d);
}

Tensor arange(double start, double end, double step, DType t, Device d) {
  if (step == 0.0 || (end - start) / step < 0)
    throw std::invalid_argument("[arange] step does not move from start to end");
  int64_t n = int64_t(std::ceil((end - start) / step));
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = start + double(i) * step;
  // Built and converted on the host, then moved: devices need not support f64.
  Tensor x = from_data(std::span<const double>(v), {n});
  if (t != DType::F64) {
    Tensor y = empty({n}, t);
    y.backend().copy(x, y);
    x = y;
  }
  return x.to(d);
}

Tensor make_view(const Tensor& x, Shape s, Strides st, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->buffer = x.buffer_ptr();
  impl->shape = std::move(s);
  impl->strides = std::move(st);
  impl->offset = offset;
  impl->dtype = x.dtype();
  impl->id = next_tensor_id();
  return Tensor(std::move(impl));
}

namespace {
struct Rng {
  uint64_t seed = 0x5eed;
  uint64_t offset = 0;
};
Rng& rng() {
  static thread_local Rng r;
  return r;
}
}  // namespace

void manual_seed(uint64_t seed) { rng() = Rng{seed, 0}; }

RngState rng_take(uint64_t count) {
  Rng& r = rng();
  RngState s{r.seed, r.offset};
  r.offset += count;
  return s;
}

void rng_restore(RngState s) { rng() = Rng{s.seed, s.offset}; }

namespace {
Tensor random(const Shape& s, RandDist dist, double a, double b, DType t, Device d) {
  if (!is_compute_float(t) && t != DType::F16 && t != DType::BF16)
    throw std::invalid_argument(fmt::format("[rand] needs a float dtype, got {}", dtype_name(t)));
  DType compute = t == DType::F64 ? DType::F64 : DType::F32;
  if (compute == t) {
    Tensor x = empty(s, compute, d);
    RngState st = rng_take(uint64_t(x.numel()));
    x.backend().rand(x, dist, st.seed, st.offset, a, b);
    return x;
  }
  // 16-bit: drawn in f32 chunks of at most 4M elements (element i still uses counter offset + i), so
  // a large 16-bit weight never needs a full f32 copy alongside it (a 50257 x 2048 embedding: 412 MB).
  Tensor y = empty(s, t, d);
  const int64_t n = y.numel(), chunk = int64_t(1) << 22;
  RngState st = rng_take(uint64_t(n));
  Tensor flat = y.reshape({n});
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t len = std::min(chunk, n - i);
    Tensor x = empty({len}, compute, d);
    x.backend().rand(x, dist, st.seed, st.offset + uint64_t(i), a, b);
    Tensor part = narrow(flat, 0, i, len);
    y.backend().copy(x, part);
  }
  return y;
}
}  // namespace

Tensor rand(const Shape& s, double lo, double hi, DType t, Device d) {
  return random(s, RandDist::Uniform, lo, hi, t, d);
}
Tensor randn(const Shape& s, double mean, double std, DType t, Device d) {
  return random(s, RandDist::Normal, mean, std, t, d);
}

Tensor randperm(int64_t n, Device d) {
  // Sort Philox keys on the host: the same permutation on every backend for a given seed.
  RngState st = rng_take(uint64_t(n));
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto w = philox_at(st.seed, st.offset + uint64_t(i));
    keys[size_t(i)] = (uint64_t(w[0]) << 32) | w[1];
  }
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return keys[size_t(a)] < keys[size_t(b)]; });
  return from_data(std::span<const int64_t>(idx), {n}, d);
}

}  // namespace rf
