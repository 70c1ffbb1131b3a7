#pragma once
// Shared helpers for the doctest suites: tensor builders, comparisons, the backend loop and the
// finite-difference gradient checker.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/tensor.h"

namespace rf::test {

// The reference fixtures folder (RF_FIXTURES, set by meson to tests/fixtures).
inline std::string fixtures_dir() {
  const char* f = std::getenv("RF_FIXTURES");
  REQUIRE_MESSAGE(f != nullptr, "RF_FIXTURES is not set (meson sets it to tests/fixtures)");
  return f;
}

// max |a - b| / max |b| over the values, in f64 on the host: the agreement measure of the golden
// tests and the fixtures. a and b must have one shape.
inline double rel_gap(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  auto host = [](const Tensor& t) { return t.detach().to(Device{}).to(DType::F64).contiguous().to_vector<double>(); };
  const std::vector<double> x = host(a), y = host(b);
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return diff / scale;
}

// Devices selected by RF_BACKENDS (filled by tests/main.cpp; "cpu" by default).
std::vector<Device>& test_devices();

// Runs f(device) once per selected backend, each inside its own doctest SUBCASE.
template <class F>
void for_each_backend(F&& f) {
  for (const Device& d : test_devices()) {
    std::string name(device_name(d.type));
    DOCTEST_SUBCASE(name.c_str()) { f(d); }
  }
}

// The message of the std::invalid_argument f throws ("" when it throws nothing; other types escape).
template <class F>
std::string invalid_argument_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

inline Tensor f64(const std::vector<double>& v, const Shape& s, Device d = {}) { return from_data(v, s, d); }
inline Tensor f32(const std::vector<float>& v, const Shape& s, Device d = {}) { return from_data(v, s, d); }
inline Tensor i64(const std::vector<int64_t>& v, const Shape& s, Device d = {}) { return from_data(v, s, d); }
// Bool storage is one byte per element (0 or 1); std::vector<bool> has no contiguous data.
inline Tensor bools(const std::vector<int>& v, const Shape& s, Device d = {}) {
  std::vector<uint8_t> b(v.begin(), v.end());
  return from_raw(std::as_bytes(std::span<const uint8_t>(b)), s, DType::Bool, d);
}
// Tests written in f64 on the CPU run in f32 on Vulkan, whose kernels compute in f32.
inline DType ftype(Device d) { return d.type == DeviceType::CPU ? DType::F64 : DType::F32; }
inline Tensor fdata(const std::vector<double>& v, const Shape& s, Device d) {
  return from_data(v, s).to(ftype(d)).to(d);
}
// Relative tolerance for results computed in ftype(d).
inline double ftol(Device d, double f64_tol) { return d.type == DeviceType::CPU ? f64_tol : std::max(f64_tol, 2e-6); }
// An F64 leaf that records gradients.
inline Tensor leaf(const std::vector<double>& v, const Shape& s) {
  Tensor t = from_data(v, s);
  t.set_requires_grad(true);
  return t;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}
inline bool allclose(const std::vector<double>& x, const std::vector<double>& y, double rtol = 1e-5,
                     double atol = 1e-8) {
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i)
    if (!(std::abs(x[i] - y[i]) <= atol + rtol * std::abs(y[i]))) return false;
  return true;
}
inline bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8) {
  return a.shape() == b.shape() && allclose(a.to_vector<double>(), b.to_vector<double>(), rtol, atol);
}

// n values with |v| in [lo, hi], pairwise at least min_gap apart and min_gap away from every
// point in avoid, so max/min/abs/relu/clamp never sit on a kink under a 1e-6 perturbation.
inline std::vector<double> distinct_values(size_t n, uint64_t seed, double lo = 0.1, double hi = 1.5,
                                           bool positive = false, std::vector<double> avoid = {},
                                           double min_gap = 0.004) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> mag(lo, hi);
  std::bernoulli_distribution neg(0.5);
  std::vector<double> out;
  while (out.size() < n) {
    double v = mag(gen);
    if (!positive && neg(gen)) v = -v;
    auto close = [&](double u) { return std::abs(u - v) < min_gap; };
    if (std::any_of(out.begin(), out.end(), close) || std::any_of(avoid.begin(), avoid.end(), close)) continue;
    out.push_back(v);
  }
  return out;
}

struct GradcheckResult {
  double max_rel_error = 0;
  std::string worst;  // "input i element j: tape a vs numeric n"
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Compares the tape gradient of L = sum(fn(inputs) * W) (W fixed and random, so every output
// element counts) with f64 central differences. Inputs must be contiguous F64 leaves.
// relative error = |a - n| / max(|a|, |n|, 1).
inline GradcheckResult gradcheck(const GradFn& fn, const std::vector<Tensor>& inputs, double h = 1e-6) {
  for (const Tensor& x : inputs) {
    REQUIRE(x.dtype() == DType::F64);
    REQUIRE(x.is_leaf());
    REQUIRE(x.requires_grad());
    Tensor(x).zero_grad();  // a handle copy shares the impl, so this clears the caller's leaf
  }
  Tensor out = fn(inputs);
  REQUIRE(out.dtype() == DType::F64);
  std::mt19937_64 gen(0xC0FFEE);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> w(size_t(out.numel()));
  for (double& x : w) x = u(gen);
  Tensor wt = from_data(w, out.shape(), out.device());
  backward(sum(mul(out, wt)));

  auto loss_at = [&](const std::vector<Tensor>& xs) {
    NoGradGuard g;
    std::vector<double> o = fn(xs).to_vector<double>();
    REQUIRE(o.size() == w.size());
    double l = 0;
    for (size_t k = 0; k < o.size(); ++k) l += o[k] * w[k];
    return l;
  };

  GradcheckResult res;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    std::vector<double> base = x.to_vector<double>();
    std::vector<double> tape =
        x.grad().defined() ? x.grad().to_vector<double>() : std::vector<double>(base.size(), 0.0);
    REQUIRE(tape.size() == base.size());
    std::vector<Tensor> xs(inputs.begin(), inputs.end());
    for (size_t j = 0; j < base.size(); ++j) {
      std::vector<double> p = base;
      p[j] = base[j] + h;
      xs[i] = from_data(p, x.shape(), x.device());
      double lp = loss_at(xs);
      p[j] = base[j] - h;
      xs[i] = from_data(p, x.shape(), x.device());
      double lm = loss_at(xs);
      double num = (lp - lm) / (2 * h);
      double a = tape[j];
      double err = std::abs(a - num) / std::max({std::abs(a), std::abs(num), 1.0});
      if (!(err <= res.max_rel_error)) {  // also catches NaN
        res.max_rel_error = std::isnan(err) ? INFINITY : err;
        res.worst = "input " + std::to_string(i) + " element " + std::to_string(j) + ": tape " + std::to_string(a) +
                    " vs numeric " + std::to_string(num);
      }
    }
  }
  return res;
}

// Sets an environment variable for a scope (nullptr: unsets it) and restores what was there. A CLI
// child inherits it; in-process backends made later in the process must not see it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

}  // namespace rf::test
