// bitsandbytes checkpoints both ways (see bnb_io.h for the layout).
#include "models/bnb_io.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "engine/backend.h"
#include "models/bnb_state.h"

namespace rf::models {

namespace {

using safetensors::StDType;
using safetensors::TensorInfo;

[[noreturn]] void fail(const std::string& file, const std::string& key, const std::string& what) {
  throw std::runtime_error(fmt::format("[bnb] {}: {}: {}", file, safetensors::quote_name(key), what));
}

std::string shape_of(const TensorInfo& t) { return fmt::format("[{}]", fmt::join(t.shape, ", ")); }
uint64_t count(const TensorInfo& t) {
  uint64_t n = 1;
  for (uint64_t d : t.shape) n *= d;
  return n;
}

struct Reader {
  const safetensors::Checkpoint& ck;
  std::string file;

  const TensorInfo& need(const std::string& key, StDType dt, uint64_t n, const char* what) const {
    if (!ck.contains(key)) fail(file, key, fmt::format("missing ({})", what));
    const TensorInfo& t = ck.info(key);
    if (t.dtype != dt)
      fail(file, key,
           fmt::format("dtype {} where {} is expected", safetensors::dtype_string(t.dtype),
                       safetensors::dtype_string(dt)));
    if (count(t) != n) fail(file, key, fmt::format("shape {} holds {} values, expected {}", shape_of(t), count(t), n));
    return t;
  }
  std::span<const std::byte> bytes(const std::string& key) const { return ck.file_of(key)->bytes(ck.info(key)); }
  template <class T>
  std::vector<T> values(const std::string& key) const {
    auto b = bytes(key);
    std::vector<T> v(b.size() / sizeof(T));
    if (!v.empty()) std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
    return v;
  }
  // The codes as the word container, aliasing the mapping on the CPU when they fill whole words (the last
  // word of a container is padding the file may not have). The CPU kernel reads bytes, so the start need
  // not be word-aligned, and safetensors rarely aligns a U8 tensor that follows a JSON state.
  Tensor words(const std::string& key, int64_t n, Device d) const {
    auto b = bytes(key);
    if (d.type == DeviceType::CPU && n % 4 == 0 && n > 0)
      if (Tensor t = ck.file_of(key)->alias(b.first(size_t(n)), {n / 4}, DType::I32, d); t.defined()) return t;
    return code_words(reinterpret_cast<const uint8_t*>(b.data()), n, d);
  }
};

template <size_t N>
void check_table(const Reader& r, const std::string& key, const std::array<float, N>& want, const char* name) {
  r.need(key, StDType::F32, N, name);
  const std::vector<float> got = r.values<float>(key);
  if (std::memcmp(got.data(), want.data(), N * sizeof(float)) != 0)
    fail(r.file, key, fmt::format("is not bitsandbytes' {} (custom code tables are not supported)", name));
}

}  // namespace

std::optional<QuantSpec> bnb_spec_from_config(const nlohmann::json& config, const std::string& file) {
  if (!config.is_object() || !config.contains("quantization_config")) return std::nullopt;
  const auto& q = config["quantization_config"];
  auto bad = [&](const std::string& m) {
    throw std::runtime_error(fmt::format("[bnb] {}: quantization_config: {}", file, m));
  };
  if (!q.is_object()) bad("must be an object");
  const std::string method =
      q.contains("quant_method") && q["quant_method"].is_string() ? q["quant_method"].get<std::string>() : "";
  if (method != "bitsandbytes")
    bad(fmt::format("quant_method '{}' is not supported; rankforge reads bitsandbytes 4-bit and 8-bit checkpoints",
                    method));
  auto flag = [&](const char* a, const char* b) {
    for (const char* k : {a, b})
      if (q.contains(k) && !q[k].is_null()) {
        if (!q[k].is_boolean()) bad(fmt::format("'{}' must be true or false", k));
        if (q[k].get<bool>()) return true;
      }
    return false;
  };
  const bool four = flag("load_in_4bit", "_load_in_4bit"), eight = flag("load_in_8bit", "_load_in_8bit");
  if (four == eight) bad("exactly one of load_in_4bit and load_in_8bit must be true");
  QuantSpec s;
  s.skip_modules.clear();
  if (q.contains("llm_int8_skip_modules") && !q["llm_int8_skip_modules"].is_null()) {
    if (!q["llm_int8_skip_modules"].is_array()) bad("'llm_int8_skip_modules' must be a list of names");
    for (const auto& m : q["llm_int8_skip_modules"]) {
      if (!m.is_string()) bad("'llm_int8_skip_modules' must be a list of names");
      s.skip_modules.push_back(m.get<std::string>());
    }
  }
  // bnb_4bit_compute_dtype is written for 8-bit models too; float16 compute runs in bf16 here
  const std::string cd = q.contains("bnb_4bit_compute_dtype") && q["bnb_4bit_compute_dtype"].is_string()
                             ? q["bnb_4bit_compute_dtype"].get<std::string>()
                             : "float32";
  s.compute = cd == "float32" ? DType::F32 : DType::BF16;
  if (eight) {
    s.type = QuantType::Int8;
    s.blocksize = 0;
    return s;
  }
  const std::string t = q.contains("bnb_4bit_quant_type") && q["bnb_4bit_quant_type"].is_string()
                            ? q["bnb_4bit_quant_type"].get<std::string>()
                            : "fp4";  // transformers' default
  if (t != "nf4" && t != "fp4") bad(fmt::format("bnb_4bit_quant_type '{}' is not nf4 or fp4", t));
  s.type = t == "nf4" ? QuantType::NF4 : QuantType::FP4;
  if (q.contains("bnb_4bit_use_double_quant") && q["bnb_4bit_use_double_quant"].is_boolean())
    s.double_quant = q["bnb_4bit_use_double_quant"].get<bool>();
  if (q.contains("bnb_4bit_quant_storage") && q["bnb_4bit_quant_storage"].is_string() &&
      q["bnb_4bit_quant_storage"].get<std::string>() != "uint8")
    bad(fmt::format("bnb_4bit_quant_storage '{}' is not supported (uint8 only)",
                    q["bnb_4bit_quant_storage"].get<std::string>()));
  return s;
}

nlohmann::json bnb_config_json(const QuantSpec& s) {
  const bool four = is_4bit(s.type);
  nlohmann::json skip = s.skip_modules.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.skip_modules);
  return {{"_load_in_4bit", four},
          {"_load_in_8bit", !four},
          {"bnb_4bit_compute_dtype", s.compute == DType::F32 ? "float32" : "bfloat16"},
          {"bnb_4bit_quant_storage", "uint8"},
          {"bnb_4bit_quant_type", four ? std::string(quant_type_name(s.type)) : "fp4"},
          {"bnb_4bit_use_double_quant", four && s.double_quant},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false},
          {"llm_int8_skip_modules", skip},
          {"llm_int8_threshold", 6.0},
          {"load_in_4bit", four},
          {"load_in_8bit", !four},
          {"quant_method", "bitsandbytes"}};
}

bool is_bnb_aux_key(const std::string& k) {
  for (const char* s :
       {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax", ".weight.nested_quant_map",
        ".weight.quant_state.bitsandbytes__nf4", ".weight.quant_state.bitsandbytes__fp4", ".SCB", ".weight_format"})
    if (k.ends_with(s)) return true;
  return false;
}

namespace {
std::string module_of(const std::string& weight_key) {
  return weight_key.ends_with(".weight") ? weight_key.substr(0, weight_key.size() - 7) : weight_key;
}
}  // namespace

bool bnb_is_quantized(const safetensors::Checkpoint& ck, const std::string& k) {
  return ck.contains(k + ".quant_state.bitsandbytes__nf4") || ck.contains(k + ".quant_state.bitsandbytes__fp4") ||
         ck.contains(module_of(k) + ".SCB");
}

QuantWeight bnb_read_weight(const safetensors::Checkpoint& ck, const std::string& k, int64_t rows, int64_t cols,
                            DType compute, Device d) {
  Reader r{ck, ck.contains(k) ? ck.file_of(k)->path() : std::string("checkpoint")};
  QuantWeight q;
  q.rows = rows;
  q.cols = cols;
  q.compute = compute;
  const std::string nf = k + ".quant_state.bitsandbytes__nf4", fp = k + ".quant_state.bitsandbytes__fp4";
  const std::string mod = module_of(k);
  if (!ck.contains(nf) && !ck.contains(fp)) {  // 8-bit
    q.type = QuantType::Int8;
    q.blocksize = 0;
    r.need(k, StDType::I8, uint64_t(rows * cols), "int8 weight");
    if (ck.info(k).shape != std::vector<uint64_t>{uint64_t(rows), uint64_t(cols)})
      fail(r.file, k, fmt::format("shape {} is not the model's ({}, {})", shape_of(ck.info(k)), rows, cols));
    r.need(mod + ".SCB", StDType::F32, uint64_t(rows), "row absmax");
    if (ck.contains(mod + ".weight_format")) {
      r.need(mod + ".weight_format", StDType::U8, 1, "weight format");
      const uint8_t f = r.values<uint8_t>(mod + ".weight_format").at(0);
      if (f != 0)
        fail(r.file, mod + ".weight_format",
             fmt::format("format {} is a GPU tile layout (col32/turing/ampere); only 0 (row) is supported", f));
    }
    q.codes = r.words(k, rows * cols, d);
    const auto scb = r.values<float>(mod + ".SCB");
    for (size_t i = 0; i < scb.size(); ++i)
      if (!std::isfinite(scb[i]) || scb[i] < 0)
        fail(r.file, mod + ".SCB", fmt::format("row {} has absmax {}", i, scb[i]));
    q.scales = from_data(scb, {rows}, d);
    return q;
  }
  if (ck.contains(nf) && ck.contains(fp)) fail(r.file, k, "carries both an nf4 and an fp4 quant state");
  const std::string qs = ck.contains(nf) ? nf : fp;
  q.type = ck.contains(nf) ? QuantType::NF4 : QuantType::FP4;
  const TensorInfo& qi = ck.info(qs);
  if (qi.dtype != StDType::U8) fail(r.file, qs, "the quant state must be U8 bytes of JSON");
  const BnbQuantState st = parse_bnb_quant_state(r.bytes(qs), r.file, qs);
  q.blocksize = st.blocksize;
  if (st.rows != rows || st.cols != cols)
    fail(r.file, qs, fmt::format("shape [{}, {}] is not the model's ({}, {})", st.rows, st.cols, rows, cols));
  if (!st.dtype.empty()) q.source_dtype = st.dtype;
  r.need(k, StDType::U8, uint64_t(q.code_bytes()), "packed 4-bit codes");
  check_table(r, k + ".quant_map", quant::code_table(q.type == QuantType::NF4 ? quant::Type4::NF4 : quant::Type4::FP4),
              q.type == QuantType::NF4 ? "nf4 table" : "fp4 table");
  const uint64_t blocks = uint64_t(q.blocks());
  const bool nested = st.nested || ck.contains(k + ".nested_absmax");
  if (!nested) {
    r.need(k + ".absmax", StDType::F32, blocks, "absmax");
    const auto a = r.values<float>(k + ".absmax");
    for (size_t i = 0; i < a.size(); ++i)
      if (!std::isfinite(a[i]) || a[i] < 0) fail(r.file, k + ".absmax", fmt::format("block {} has absmax {}", i, a[i]));
    q.scales = from_data(a, {int64_t(blocks)}, d);
  } else {
    auto ns = std::make_shared<quant::NestedAbsmax>();
    if (!st.nested) fail(r.file, qs, "has nested_absmax but the quant state has no nested_offset");
    ns->nested_blocksize = st.nested_blocksize;
    ns->offset = st.nested_offset;
    r.need(k + ".absmax", StDType::U8, blocks, "double-quantized absmax codes");
    const uint64_t nb = (blocks + uint64_t(ns->nested_blocksize) - 1) / uint64_t(ns->nested_blocksize);
    r.need(k + ".nested_absmax", StDType::F32, nb, "nested absmax");
    check_table(r, k + ".nested_quant_map", quant::dynamic_map(), "dynamic map");
    ns->codes = r.values<uint8_t>(k + ".absmax");
    ns->nested_absmax = r.values<float>(k + ".nested_absmax");
    for (size_t i = 0; i < ns->nested_absmax.size(); ++i)
      if (!std::isfinite(ns->nested_absmax[i]))
        fail(r.file, k + ".nested_absmax", fmt::format("block {} is {}", i, ns->nested_absmax[i]));
    const std::vector<float> a = quant::decompress_absmax(*ns);
    q.scales = from_data(a, {int64_t(blocks)}, d);
    q.nested = std::move(ns);
  }
  q.codes = r.words(k, q.code_bytes(), d);
  validate(q, k);
  return q;
}

void bnb_append_weight(const QuantWeight& w, const std::string& k, std::map<std::string, safetensors::RawTensor>& out) {
  using safetensors::RawTensor;
  auto f32 = [](const std::vector<float>& v) {
    RawTensor t{StDType::F32, {uint64_t(v.size())}, std::vector<uint8_t>(v.size() * 4)};
    if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    return t;
  };
  const std::vector<uint8_t> codes = code_bytes(w.codes, w.code_bytes());
  if (w.type == QuantType::Int8) {
    out[k] = RawTensor{StDType::I8, {uint64_t(w.rows), uint64_t(w.cols)}, codes};
    out[module_of(k) + ".SCB"] = f32(w.scales.to_vector<float>());
    out[module_of(k) + ".weight_format"] = RawTensor{StDType::U8, {}, {0}};
    return;
  }
  out[k] = RawTensor{StDType::U8, {uint64_t(codes.size()), 1}, codes};
  const auto& table = quant::code_table(w.type == QuantType::NF4 ? quant::Type4::NF4 : quant::Type4::FP4);
  out[k + ".quant_map"] = f32(std::vector<float>(table.begin(), table.end()));
  // Key order as bitsandbytes' as_dict writes it; transformers reads the keys, not the order.
  nlohmann::ordered_json j = {{"quant_type", quant_type_name(w.type)},
                              {"blocksize", w.blocksize},
                              {"dtype", w.source_dtype},
                              {"shape", {w.rows, w.cols}}};
  if (w.nested) {
    RawTensor a{StDType::U8, {uint64_t(w.nested->codes.size())}, w.nested->codes};
    out[k + ".absmax"] = a;
    out[k + ".nested_absmax"] = f32(w.nested->nested_absmax);
    const auto& dm = quant::dynamic_map();
    out[k + ".nested_quant_map"] = f32(std::vector<float>(dm.begin(), dm.end()));
    j["nested_blocksize"] = w.nested->nested_blocksize;
    j["nested_dtype"] = "float32";
    j["nested_offset"] = double(w.nested->offset);
  } else {
    out[k + ".absmax"] = f32(w.scales.to_vector<float>());
  }
  const std::string text = j.dump();
  out[k + ".quant_state.bitsandbytes__" + std::string(quant_type_name(w.type))] =
      RawTensor{StDType::U8, {uint64_t(text.size())}, std::vector<uint8_t>(text.begin(), text.end())};
}

}  // namespace rf::models
