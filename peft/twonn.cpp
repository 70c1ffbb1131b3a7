#include "peft/twonn.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "engine/ops.h"

namespace rf::peft {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("[twonn] " + msg); }

// Indices of the distinct rows of X (n, d), each at its first occurrence, in row order. Rows are
// sorted lexicographically (ties by index) so equal rows sit together; == treats -0.0 as 0.0.
std::vector<int64_t> distinct_rows(const double* X, int64_t n, int64_t d) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  auto row = [&](int64_t i) { return X + i * d; };
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const double *pa = row(a), *pb = row(b);
    for (int64_t k = 0; k < d; ++k)
      if (pa[k] != pb[k]) return pa[k] < pb[k];
    return a < b;
  });
  std::vector<char> dup(size_t(n), 0);
  for (size_t k = 1; k < order.size(); ++k)
    if (std::equal(row(order[k - 1]), row(order[k - 1]) + d, row(order[k]))) dup[size_t(order[k])] = 1;
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i)
    if (!dup[size_t(i)]) keep.push_back(i);
  return keep;
}

double squared_distance(const double* a, const double* b, int64_t d) {
  double s = 0;
  for (int64_t k = 0; k < d; ++k) {
    const double t = a[k] - b[k];
    s += t * t;
  }
  return s;
}

// Squared distances to the first and second nearest neighbour of every row of X (n, d), self
// excluded. Candidates come from the Gram identity |a−b|² = |a|² + |b|² − 2a·b on mean-centred rows,
// one f64 GEMM per block of rows (engine matmul: O(n²d) at BLAS speed, n×block memory); the best few candidates are
// then re-measured directly on the original rows, because the identity loses digits when points are
// close compared with their norms and could misorder near ties.
std::vector<std::pair<double, double>> two_nearest(const std::vector<double>& X, int64_t n, int64_t d) {
  std::vector<double> mean(size_t(d), 0.0), C(X.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < d; ++k) mean[size_t(k)] += X[size_t(i * d + k)];
  for (double& m : mean) m /= double(n);
  std::vector<double> sq(size_t(n), 0.0);  // (n) |c_i|²
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < d; ++k) {
      const double c = X[size_t(i * d + k)] - mean[size_t(k)];
      C[size_t(i * d + k)] = c;
      sq[size_t(i)] += c * c;
    }
  }
  const int64_t block = 128, cand = std::min<int64_t>(8, n - 1);
  std::vector<std::pair<double, double>> out(static_cast<size_t>(n));
  NoGradGuard no_grad;
  const Tensor Ct = from_data(C, {n, d});  // (n, d) f64 on the CPU
  // One engine GEMM per block (it spreads over the threads itself), then the rows of the block in parallel.
  for (int64_t r0 = 0; r0 < n; r0 += block) {
    const int64_t rows = std::min(block, n - r0);
    const std::vector<double> G =
        matmul(Ct.narrow(0, r0, rows), Ct.transpose(0, 1)).to_vector<double>();  // (rows, n) c_i · c_j
    tbb::parallel_for(int64_t(0), rows, [&](int64_t r) {
      const int64_t i = r0 + r;
      std::vector<std::pair<double, int64_t>> best;  // (approx d², j) ascending, at most cand
      best.reserve(size_t(cand) + 1);
      for (int64_t j = 0; j < n; ++j) {
        if (j == i) continue;
        const double a = sq[size_t(i)] + sq[size_t(j)] - 2.0 * G[size_t(r * n + j)];
        if (int64_t(best.size()) == cand && a >= best.back().first) continue;
        if (int64_t(best.size()) == cand) best.pop_back();
        best.insert(std::upper_bound(best.begin(), best.end(), std::make_pair(a, j)), {a, j});
      }
      double d1 = INFINITY, d2 = INFINITY;
      for (const auto& [a, j] : best) {
        const double e = squared_distance(X.data() + i * d, X.data() + j * d, d);
        if (e < d1) {
          d2 = d1;
          d1 = e;
        } else if (e < d2) {
          d2 = e;
        }
      }
      out[size_t(i)] = {d1, d2};
    });
  }
  return out;
}

}  // namespace

TwoNnFit twonn_fit(const std::vector<double>& points, int64_t n, int64_t d, const TwoNnOptions& opt) {
  if (n < 0 || d < 1 || int64_t(points.size()) != n * d)
    fail(fmt::format("points must be (N, D) with D >= 1, got {} values for ({}, {})", points.size(), n, d));
  if (!(opt.discard_fraction >= 0.0 && opt.discard_fraction < 1.0))
    fail(fmt::format("discard_fraction must be in [0, 1), got {}", opt.discard_fraction));
  for (size_t i = 0; i < points.size(); ++i)
    if (!std::isfinite(points[i]))
      fail(fmt::format("point {} has a non-finite coordinate ({})", int64_t(i) / d, points[i]));

  TwoNnFit fit;
  std::vector<int64_t> keep = distinct_rows(points.data(), n, d);
  fit.duplicates = n - int64_t(keep.size());
  if (fit.duplicates > 0 && !opt.drop_duplicates)
    fail(
        fmt::format("{} of {} points duplicate an earlier point (r1 = 0, infinite μ); drop them or set drop_duplicates",
                    fit.duplicates, n));
  const int64_t N = int64_t(keep.size());
  if (N < 3) fail(fmt::format("needs at least 3 distinct points, got {}", N));
  std::vector<double> X;
  if (fit.duplicates == 0) {
    X = points;
  } else {
    X.reserve(size_t(N * d));
    for (int64_t i : keep) X.insert(X.end(), points.begin() + i * d, points.begin() + (i + 1) * d);
  }
  fit.points = N;

  auto nn = two_nearest(X, N, d);
  fit.mu.resize(size_t(N));
  for (int64_t i = 0; i < N; ++i) {
    const auto [d1, d2] = nn[size_t(i)];
    if (!(d1 > 0)) fail(fmt::format("point {} is closer to a neighbour than f64 resolves (r1 = 0)", keep[size_t(i)]));
    fit.mu[size_t(i)] = std::sqrt(d2) / std::sqrt(d1);
  }

  // skdim: K = int(N * (1 - f)) in double arithmetic, the same truncation here.
  const int64_t K = int64_t(double(N) * (1.0 - opt.discard_fraction));
  if (K < 2) fail(fmt::format("discard_fraction {} leaves {} of {} points for the fit", opt.discard_fraction, K, N));
  std::vector<double> sorted = fit.mu;
  std::sort(sorted.begin(), sorted.end());
  fit.x.resize(size_t(K));
  fit.y.resize(size_t(K));
  double sxy = 0, sxx = 0;
  for (int64_t k = 0; k < K; ++k) {
    const double x = std::log(sorted[size_t(k)]), y = -std::log1p(-double(k) / double(N));
    fit.x[size_t(k)] = x;
    fit.y[size_t(k)] = y;
    sxy += x * y;
    sxx += x * x;
  }
  if (!(sxx > 0)) fail(fmt::format("degenerate fit: all {} kept ratios r2/r1 are 1 (equidistant neighbours)", K));
  fit.dimension = sxy / sxx;
  return fit;
}

TwoNnFit twonn_fit(const Tensor& points, const TwoNnOptions& opt) {
  if (points.dim() != 2) fail(fmt::format("points must be (N, D), got {} dims", points.dim()));
  return twonn_fit(points.to(Device{}).to_vector<double>(), points.size(0), points.size(1), opt);
}

double twonn(const Tensor& points, const TwoNnOptions& opt) { return twonn_fit(points, opt).dimension; }

}  // namespace rf::peft
