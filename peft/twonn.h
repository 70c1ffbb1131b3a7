#pragma once
// TwoNN intrinsic-dimension estimator (methods.md §4.2), the formula of scikit-dimension's
// skdim.id.TwoNN (Facco et al. 2017) at scikit-learn-contrib/scikit-dimension@011984c:
//   per point, r1 and r2 = Euclidean distances to its 1st and 2nd nearest neighbour (self excluded),
//   μ = r2 / r1; sort μ ascending and keep the first K = floor(N·(1 − f)) values;
//   x_k = log μ_(k), y_k = −log(1 − k/N) for k = 0..K−1 (skdim's Femp = arange(K) / N: the k-th
//   smallest μ gets the empirical CDF k/N, starting at 0);
//   d = Σ x_k y_k / Σ x_k² (least squares through the origin, LinearRegression(fit_intercept=False)).
// Distances are computed in f64 whatever the input dtype.
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace rf::peft {

struct TwoNnOptions {
  double discard_fraction = 0.1;  // f in [0, 1): the largest μ are dropped
  // Exact duplicate rows make r1 = 0 and μ infinite (skdim then fails inside LinearRegression).
  // true: keep one copy of every distinct row and estimate on those (N = distinct rows), as DADApy's
  // remove_identical_points does; false: throw "[twonn] ... duplicate ...".
  bool drop_duplicates = true;
};

struct TwoNnFit {
  double dimension = 0;      // d
  int64_t points = 0;        // N after dropping duplicates
  int64_t duplicates = 0;    // rows dropped as copies of an earlier row
  std::vector<double> mu;    // (N) r2 / r1 per kept point, in row order of the distinct points
  std::vector<double> x, y;  // (K) the regression coordinates, x ascending
};

// points (N, D), any float dtype and device. Throws std::invalid_argument "[twonn] ..." for a
// non-2-D input, non-finite values, fewer than 3 distinct points, a bad discard_fraction, or a
// degenerate fit (every kept μ = 1, e.g. a regular grid).
TwoNnFit twonn_fit(const Tensor& points, const TwoNnOptions& opt = {});
double twonn(const Tensor& points, const TwoNnOptions& opt = {});

// The same on a row-major (N, D) f64 buffer (what twonn_fit converts its input to).
TwoNnFit twonn_fit(const std::vector<double>& points, int64_t n, int64_t d, const TwoNnOptions& opt = {});

}  // namespace rf::peft
