#include "peft/linalg.h"

#include <fmt/format.h>
#include <lapacke.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace rf::peft {

namespace {
std::vector<double> host_matrix(const Tensor& a, const char* who) {
  if (a.dim() != 2) throw std::invalid_argument(fmt::format("[{}] expects a matrix, got {} dims", who, a.dim()));
  return a.contiguous().to_vector<double>();
}
Tensor to_device(const std::vector<double>& v, const Shape& s, Device d) {
  return from_data(v, s).to(DType::F32).to(d);
}
}  // namespace

std::tuple<Tensor, Tensor, Tensor> svd(const Tensor& a) {
  std::vector<double> x = host_matrix(a, "svd");
  const lapack_int m = lapack_int(a.size(0)), n = lapack_int(a.size(1)), k = std::min(m, n);
  std::vector<double> s(static_cast<size_t>(k)), u(size_t(m) * size_t(k)), vt(size_t(k) * size_t(n));
  lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', m, n, x.data(), n, s.data(), u.data(), k, vt.data(), n);
  if (info != 0)
    throw std::runtime_error(fmt::format("[svd] LAPACK dgesdd failed (info {}) on a {}x{} matrix", info, m, n));
  Device d = a.device();
  return {to_device(u, {m, k}, d), to_device(s, {k}, d), to_device(vt, {k, n}, d)};
}

std::pair<Tensor, Tensor> qr(const Tensor& a) {
  std::vector<double> x = host_matrix(a, "qr");
  const lapack_int m = lapack_int(a.size(0)), n = lapack_int(a.size(1)), k = std::min(m, n);
  std::vector<double> tau(static_cast<size_t>(k));
  lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, m, n, x.data(), n, tau.data());
  if (info != 0) throw std::runtime_error(fmt::format("[qr] LAPACK dgeqrf failed (info {})", info));
  std::vector<double> r(size_t(k) * size_t(n), 0.0);
  for (lapack_int i = 0; i < k; ++i)
    for (lapack_int j = i; j < n; ++j) r[size_t(i) * size_t(n) + size_t(j)] = x[size_t(i) * size_t(n) + size_t(j)];
  // Q's first k columns from the Householder reflectors (m x k, leading dimension n >= k when m >= n).
  std::vector<double> q(size_t(m) * size_t(k));
  for (lapack_int i = 0; i < m; ++i)
    for (lapack_int j = 0; j < k; ++j) q[size_t(i) * size_t(k) + size_t(j)] = x[size_t(i) * size_t(n) + size_t(j)];
  info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, m, k, k, q.data(), k, tau.data());
  if (info != 0) throw std::runtime_error(fmt::format("[qr] LAPACK dorgqr failed (info {})", info));
  Device d = a.device();
  return {to_device(q, {m, k}, d), to_device(r, {k, n}, d)};
}

}  // namespace rf::peft
