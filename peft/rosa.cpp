#include "peft/rosa.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "peft/pattern.h"

namespace rf::peft {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("[rosa] " + msg); }

// Strict decimal digits only: Python's int() would also take "+5", " 5" or "5_0", but no shipped
// schedule uses those and accepting them would hide typos.
bool parse_digits(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 18) return false;
  int64_t x = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    x = x * 10 + (c - '0');
  }
  *v = x;
  return true;
}

}  // namespace

// ---- Schedule ----

std::vector<std::string> RosaAgenda::names() const {
  std::vector<std::string> n;
  if (lora) n.push_back("lora");
  if (grad_collection) n.push_back("grad_collection");
  if (spa) n.push_back("spa");
  return n;
}

RosaAgenda RosaSchedule::agenda(int64_t step) const {
  if (step < 0) fail(fmt::format("schedule '{}': step {} is negative", name, step));
  // Upstream builds a list of {agenda, end} phases and takes the first with step < end; the same
  // phases in closed form. collect_end is where the collection phase ends (empty when masks load).
  const bool collects = kind != Kind::LoraOnly && !masks_loaded;
  const int64_t collect_begin = kind == Kind::Warmup ? lora_warmup_steps : 0;
  const int64_t collect_end = collects ? collect_begin + spa_num_grads : collect_begin;
  auto phase = [&](int64_t s) {
    RosaAgenda a;
    if (kind == Kind::LoraOnly) {
      a.lora = true;
    } else if (s < collect_begin) {  // Warmup only: LoRA alone
      a.lora = true;
    } else if (s < collect_end) {
      a.lora = kind == Kind::Warmup;  // spa_only collects without LoRA
      a.grad_collection = true;
    } else {
      a.lora = kind == Kind::Warmup;
      a.spa = true;
    }
    return a;
  };
  RosaAgenda a = phase(step);
  a.generate_masks_after = a.grad_collection && !phase(step + 1).grad_collection;
  return a;
}

RosaSchedule parse_rosa_schedule(const std::string& schedule, double d, int64_t spa_num_grads, bool masks_loaded) {
  if (schedule.empty()) fail("schedule is required (default, df, lora_only, spa_only or wl<N>)");
  if (!(d >= 0.0 && d <= 1.0)) fail(fmt::format("density d = {} is not in [0, 1]", d));
  RosaSchedule s;
  s.name = schedule;
  s.spa_num_grads = spa_num_grads;
  s.masks_loaded = masks_loaded;
  if (schedule == "default" || schedule == "df") {
    s.kind = RosaSchedule::Kind::Warmup;  // = wl0 (scheduler.py)
  } else if (schedule == "lora_only") {
    if (d != 0.0) fail(fmt::format("schedule lora_only requires density d = 0, got {}", d));
    s.kind = RosaSchedule::Kind::LoraOnly;
  } else if (schedule == "spa_only") {
    if (!(d > 0.0)) fail("schedule spa_only requires density d > 0");
    s.kind = RosaSchedule::Kind::SpaOnly;
  } else if (schedule.starts_with("wl")) {
    if (!parse_digits(schedule.substr(2), &s.lora_warmup_steps))
      fail(fmt::format("schedule '{}': expected wl<N> with N a non-negative integer, like wl64", schedule));
    s.kind = RosaSchedule::Kind::Warmup;
  } else {
    fail(fmt::format("unknown schedule '{}' (expected default, df, lora_only, spa_only or wl<N>)", schedule));
  }
  if (s.kind == RosaSchedule::Kind::Warmup && !(d > 0.0)) {
    // Upstream accepts wl0/default with d = 0 at parse time but then asserts d > 0 when it generates
    // the masks at the end of the collection step; failing here says so before any training.
    fail(fmt::format("schedule '{}' requires density d > 0 (use lora_only for d = 0)", schedule));
  }
  if (s.kind != RosaSchedule::Kind::LoraOnly && !masks_loaded && spa_num_grads < 1)
    fail(fmt::format("spa_num_grads must be >= 1 to collect gradients, got {}", spa_num_grads));
  return s;
}

// ---- Mask generation ----

RosaGradAccMode parse_grad_acc_mode(const std::string& s) {
  if (s == "mean_squared") return RosaGradAccMode::MeanSquared;
  if (s == "mean") return RosaGradAccMode::Mean;
  fail(fmt::format("grad_acc_mode '{}' is not mean_squared or mean", s));
}

RosaGradAccumulator::RosaGradAccumulator(int64_t out, int64_t in, RosaGradAccMode mode)
    : out_(out), in_(in), mode_(mode) {
  if (out <= 0 || in <= 0) fail(fmt::format("gradient accumulator needs a positive shape, got ({}, {})", out, in));
  sum_.assign(size_t(out * in), 0.0);
}

void RosaGradAccumulator::add(const Tensor& grad) {
  if (!grad.defined()) fail("gradient accumulator got an undefined tensor");
  if (grad.shape() != Shape{out_, in_})
    fail(fmt::format("gradient of shape {} does not match the weight ({}, {})", shape_str(grad.shape()), out_, in_));
  if (!is_float(grad.dtype())) fail(fmt::format("gradient dtype {} is not a float type", dtype_name(grad.dtype())));
  const std::vector<float> g = grad.to_vector<float>();
  add(std::span<const float>(g));
}

void RosaGradAccumulator::add(std::span<const float> grad) {
  if (int64_t(grad.size()) != out_ * in_)
    fail(fmt::format("gradient has {} entries, the weight ({}, {}) has {}", grad.size(), out_, in_, out_ * in_));
  // Sum in f64 and divide once in collected(): the mean upstream keeps as an f32 running mean
  // ((prev·cnt + new)/(cnt+1)), without its rounding drift, so ties and order do not depend on
  // the number of micro-batches. Only scores that differ in the last f32 bits can rank differently.
  for (size_t i = 0; i < grad.size(); ++i) {
    const double g = grad[i];
    sum_[i] += mode_ == RosaGradAccMode::MeanSquared ? g * g : g;
  }
  ++count_;
}

void RosaGradAccumulator::restore(std::vector<double> sums, int64_t count) {
  if (int64_t(sums.size()) != out_ * in_ || count < 0)
    fail(fmt::format("accumulator state has {} sums and count {}, expected {} sums", sums.size(), count, out_ * in_));
  sum_ = std::move(sums);
  count_ = count;
}

std::vector<double> RosaGradAccumulator::collected() const {
  if (count_ == 0) fail("no gradients were collected (count is 0)");
  std::vector<double> m(sum_.size());
  for (size_t i = 0; i < m.size(); ++i) m[i] = sum_[i] / double(count_);
  return m;
}

double rosa_density_for(double d, const std::vector<std::pair<std::string, double>>& density_pattern,
                        const std::string& module_name) {
  double v = d;
  for (const auto& [key, dens] : density_pattern)
    if (pattern_key_matches(key, module_name)) {
      v = dens;
      break;  // first match wins, as rank_pattern (config.cpp rank_for)
    }
  if (!(v >= 0.0 && v <= 1.0)) fail(fmt::format("density {} for module '{}' is not in [0, 1]", v, module_name));
  return v;
}

int64_t rosa_nnz(double d, int64_t out, int64_t in) {
  if (!(d >= 0.0 && d <= 1.0)) fail(fmt::format("density d = {} is not in [0, 1]", d));
  if (out < 0 || in < 0) fail(fmt::format("negative shape ({}, {})", out, in));
  // One product d * numel, as upstream (d * out * in can round differently).
  return int64_t(std::floor(d * double(out * in)));
}

Csr rosa_topk_mask(std::span<const double> scores, int64_t out, int64_t in, double d) {
  const int64_t n = out * in;
  if (int64_t(scores.size()) != n) fail(fmt::format("{} scores for a ({}, {}) weight", scores.size(), out, in));
  if (n > std::numeric_limits<int32_t>::max())
    fail(fmt::format("weight ({}, {}) is too large for a CSR mask", out, in));
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(scores[size_t(i)])) fail(fmt::format("NaN in the collected gradient at ({}, {})", i / in, i % in));
  const int64_t k = rosa_nnz(d, out, in);

  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  // A strict total order (|score| descending, then flat index ascending), so the chosen set is
  // unique: entries tied with the k-th are taken lowest index first.
  auto before = [&](int32_t a, int32_t b) {
    const double x = std::fabs(scores[size_t(a)]), y = std::fabs(scores[size_t(b)]);
    return x != y ? x > y : a < b;
  };
  if (k > 0 && k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), before);
  idx.resize(size_t(k));
  std::sort(idx.begin(), idx.end());  // row-major order = CSR order

  Csr s;
  s.rows = out;
  s.cols = in;
  s.row_ptr.assign(size_t(out + 1), 0);
  s.col_idx.reserve(idx.size());
  for (int32_t f : idx) {
    ++s.row_ptr[size_t(f / in + 1)];
    s.col_idx.push_back(int32_t(f % in));
  }
  for (int64_t r = 0; r < out; ++r) s.row_ptr[size_t(r + 1)] += s.row_ptr[size_t(r)];
  s.values.assign(idx.size(), 0.0f);  // SpA starts at 0 (SparseLinear.values = zeros)
  validate_csr(s);
  return s;
}

Csr rosa_mask(const RosaGradAccumulator& acc, double d) {
  const std::vector<double> c = acc.collected();
  return rosa_topk_mask(c, acc.out(), acc.in(), d);
}

// ---- Saved layout ----

std::string rosa_key(const std::string& module, const std::string& field) {
  static const std::vector<std::string> known = {
      "rosa_A.weight",    "rosa_B.weight",    "rosa_spa.values",      "rosa_spa.row_offs",   "rosa_spa.row_idx",
      "rosa_spa.col_idx", "rosa_spa.tr_perm", "rosa_spa.tr_row_offs", "rosa_spa.tr_row_idx", "rosa_spa.tr_col_idx"};
  if (std::find(known.begin(), known.end(), field) == known.end())
    fail(fmt::format("unknown adapter field '{}'", field));
  return module.empty() ? field : module + "." + field;
}

std::vector<std::string> rosa_spa_fields(bool with_transpose) {
  std::vector<std::string> f = {"rosa_spa.values", "rosa_spa.row_offs", "rosa_spa.row_idx", "rosa_spa.col_idx"};
  if (with_transpose)
    for (const char* t : {"rosa_spa.tr_perm", "rosa_spa.tr_row_offs", "rosa_spa.tr_row_idx", "rosa_spa.tr_col_idx"})
      f.emplace_back(t);
  return f;
}

safetensors::StDType rosa_file_dtype(const std::string& field, DType float_dtype) {
  if (field == "rosa_spa.col_idx" || field == "rosa_spa.row_idx" || field == "rosa_spa.tr_col_idx" ||
      field == "rosa_spa.tr_row_idx")
    return safetensors::StDType::I16;
  if (field == "rosa_spa.row_offs" || field == "rosa_spa.tr_row_offs" || field == "rosa_spa.tr_perm")
    return safetensors::StDType::I32;
  if (field == "rosa_spa.values" || field == "rosa_A.weight" || field == "rosa_B.weight") {
    if (!is_float(float_dtype)) fail(fmt::format("{}: dtype {} is not a float type", field, dtype_name(float_dtype)));
    return safetensors::from_rf(float_dtype);
  }
  fail(fmt::format("unknown adapter field '{}'", field));
}

namespace {

void check_dims(int64_t out, int64_t in, const std::string& module) {
  if (out <= 0 || in <= 0 || out > kRosaMaxDim || in > kRosaMaxDim)
    fail(fmt::format("module '{}': shape ({}, {}) does not fit spops' int16 indices (each dim in 1..{})", module, out,
                     in, kRosaMaxDim));
}

Tensor i32_tensor(const std::vector<int32_t>& v) { return from_data<int32_t>(v, Shape{int64_t(v.size())}); }

// A 1-D integer field of the expected length, as int64 values in [lo, hi].
std::vector<int64_t> read_index(const std::map<std::string, Tensor>& t, const std::string& key, int64_t len, int64_t lo,
                                int64_t hi) {
  auto it = t.find(key);
  if (it == t.end()) fail(fmt::format("missing tensor '{}'", key));
  const Tensor& x = it->second;
  if (!x.defined() || !is_int(x.dtype()))
    fail(fmt::format("'{}' must be an integer tensor, got {}", key, x.defined() ? dtype_name(x.dtype()) : "undefined"));
  if (x.shape() != Shape{len}) fail(fmt::format("'{}' has shape {}, expected [{}]", key, shape_str(x.shape()), len));
  std::vector<int64_t> v = x.to_vector<int64_t>();
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] < lo || v[i] > hi) fail(fmt::format("'{}'[{}] = {} is outside [{}, {}]", key, i, v[i], lo, hi));
  return v;
}

std::vector<int32_t> narrow32(const std::vector<int64_t>& v) { return std::vector<int32_t>(v.begin(), v.end()); }

// row_idx must order rows by non-increasing length; which of equal-length rows comes first is free.
void check_row_idx(const std::vector<int64_t>& idx, const std::vector<int32_t>& ptr, const std::string& key) {
  std::vector<uint8_t> seen(idx.size(), 0);
  for (int64_t r : idx) {
    if (seen[size_t(r)]) fail(fmt::format("'{}' is not a permutation (row {} repeats)", key, r));
    seen[size_t(r)] = 1;
  }
  for (size_t i = 1; i < idx.size(); ++i) {
    const int64_t a = ptr[size_t(idx[i - 1]) + 1] - ptr[size_t(idx[i - 1])];
    const int64_t b = ptr[size_t(idx[i]) + 1] - ptr[size_t(idx[i])];
    if (b > a) fail(fmt::format("'{}' does not order rows by descending nnz (position {}: {} < {})", key, i, a, b));
  }
}

}  // namespace

std::map<std::string, Tensor> rosa_spa_to_tensors(const Csr& s, const std::string& module, DType values_dtype,
                                                  bool with_transpose) {
  check_dims(s.rows, s.cols, module);
  if (!is_float(values_dtype)) fail(fmt::format("values dtype {} is not a float type", dtype_name(values_dtype)));
  try {
    validate_csr(s);
  } catch (const std::invalid_argument& e) {
    fail(fmt::format("module '{}': {}", module, e.what()));
  }
  std::map<std::string, Tensor> t;
  // Cast from f32 on the CPU: rosa_dtype is bf16 by default (§3.2), which rounds values.
  t[rosa_key(module, "rosa_spa.values")] = from_data<float>(s.values, Shape{s.nnz()}).to(values_dtype);
  t[rosa_key(module, "rosa_spa.row_offs")] = i32_tensor(s.row_ptr);
  t[rosa_key(module, "rosa_spa.row_idx")] = i32_tensor(rows_by_nnz(s));
  t[rosa_key(module, "rosa_spa.col_idx")] = i32_tensor(s.col_idx);  // < in <= 32767: fits int16
  if (with_transpose) {
    std::vector<int32_t> perm;
    const Csr tr = csr_transpose(s, &perm);  // (in, out)
    t[rosa_key(module, "rosa_spa.tr_perm")] = i32_tensor(perm);
    t[rosa_key(module, "rosa_spa.tr_row_offs")] = i32_tensor(tr.row_ptr);
    t[rosa_key(module, "rosa_spa.tr_row_idx")] = i32_tensor(rows_by_nnz(tr));
    t[rosa_key(module, "rosa_spa.tr_col_idx")] = i32_tensor(tr.col_idx);  // < out <= 32767
  }
  return t;
}

Csr rosa_spa_from_tensors(const std::map<std::string, Tensor>& tensors, const std::string& module, int64_t out,
                          int64_t in) {
  check_dims(out, in, module);
  const auto key = [&](const char* f) { return rosa_key(module, f); };
  const int64_t max_nnz = out * in;
  Csr s;
  s.rows = out;
  s.cols = in;
  s.row_ptr = narrow32(read_index(tensors, key("rosa_spa.row_offs"), out + 1, 0, max_nnz));
  const int64_t nnz = s.row_ptr.back();
  s.col_idx = narrow32(read_index(tensors, key("rosa_spa.col_idx"), nnz, 0, in - 1));

  auto vit = tensors.find(key("rosa_spa.values"));
  if (vit == tensors.end()) fail(fmt::format("missing tensor '{}'", key("rosa_spa.values")));
  const Tensor& v = vit->second;
  if (!v.defined() || !is_float(v.dtype())) fail(fmt::format("'{}' must be a float tensor", key("rosa_spa.values")));
  if (v.shape() != Shape{nnz})
    fail(fmt::format("'{}' has shape {}, expected [{}]", key("rosa_spa.values"), shape_str(v.shape()), nnz));
  s.values = v.to_vector<float>();
  try {
    validate_csr(s);
  } catch (const std::invalid_argument& e) {
    fail(fmt::format("module '{}': {}", module, e.what()));
  }
  check_row_idx(read_index(tensors, key("rosa_spa.row_idx"), out, 0, out - 1), s.row_ptr, key("rosa_spa.row_idx"));

  // The transpose is derived data: all four fields or none, and they must agree with S.
  int present = 0;
  for (const char* f : {"rosa_spa.tr_perm", "rosa_spa.tr_row_offs", "rosa_spa.tr_row_idx", "rosa_spa.tr_col_idx"})
    present += tensors.count(key(f)) ? 1 : 0;
  if (present != 0 && present != 4)
    fail(fmt::format("module '{}': only {} of the 4 tr_* tensors are present", module, present));
  if (present == 4) {
    std::vector<int32_t> perm;
    const Csr tr = csr_transpose(s, &perm);
    if (narrow32(read_index(tensors, key("rosa_spa.tr_perm"), nnz, 0, nnz - 1)) != perm ||
        narrow32(read_index(tensors, key("rosa_spa.tr_row_offs"), in + 1, 0, nnz)) != tr.row_ptr ||
        narrow32(read_index(tensors, key("rosa_spa.tr_col_idx"), nnz, 0, out - 1)) != tr.col_idx)
      fail(fmt::format("module '{}': the stored transpose does not match the transpose of S", module));
    check_row_idx(read_index(tensors, key("rosa_spa.tr_row_idx"), in, 0, in - 1), tr.row_ptr,
                  key("rosa_spa.tr_row_idx"));
  }
  return s;
}

}  // namespace rf::peft
