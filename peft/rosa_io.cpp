// RoSA adapter files (methods.md §3.5): the peft-rosa key layout of one module, the I16 fields, and the
// mask file of the two-run restart protocol.
#include <fmt/format.h>

#include <stdexcept>

#include "engine/dist.h"
#include "peft/config.h"
#include "peft/lora.h"
#include "peft/rosa.h"

namespace rf::peft {

namespace {
DType values_dtype(const std::string& rosa_dtype) {
  if (rosa_dtype == "fp32") return DType::F32;
  if (rosa_dtype == "fp16") return DType::F16;
  return DType::BF16;
}
}  // namespace

void rosa_adapter_tensors(std::map<std::string, Tensor>& out, const std::string& module_key, LoraLinear& l,
                          const std::string& adapter, const LoraConfig& c) {
  out[module_key + ".rosa_A.weight"] = l.lora_A(adapter).weight();
  out[module_key + ".rosa_B.weight"] = l.lora_B(adapter).weight();
  if (!l.spa_support(adapter)) return;  // before mask generation there is no S to save
  for (auto& [k, t] :
       rosa_spa_to_tensors(l.spa_csr(adapter), module_key, values_dtype(c.rosa.rosa_dtype), c.rosa.spa_store_transpose))
    out[k] = t;
}

std::map<std::string, safetensors::StDType> rosa_narrowed_fields(const std::map<std::string, Tensor>& tensors) {
  std::map<std::string, safetensors::StDType> n;
  for (const auto& [k, t] : tensors)
    for (const char* f : {".rosa_spa.col_idx", ".rosa_spa.row_idx", ".rosa_spa.tr_col_idx", ".rosa_spa.tr_row_idx"})
      if (k.ends_with(f)) n[k] = safetensors::StDType::I16;
  return n;
}

std::map<std::string, Tensor> rosa_masks_to_tensors(const std::map<std::string, Csr>& supports) {
  std::map<std::string, Tensor> out;
  for (const auto& [path, s] : supports) {
    std::vector<uint8_t> m(size_t(s.rows * s.cols), 0);
    for (int64_t i = 0; i < s.rows; ++i)
      for (int32_t e = s.row_ptr[size_t(i)]; e < s.row_ptr[size_t(i) + 1]; ++e)
        m[size_t(i * s.cols + s.col_idx[size_t(e)])] = 1;
    out[path] = from_raw(std::as_bytes(std::span(m)), {s.rows, s.cols}, DType::Bool);
  }
  return out;
}

std::map<std::string, Csr> rosa_masks_from_file(const std::string& path) {
  std::map<std::string, Csr> out;
  for (auto& [name, t] : dist::load_tensors_from_root(path)) {  // data parallelism: rank 0 reads, all get it
    if (t.dtype() != DType::Bool || t.dim() != 2)
      throw std::invalid_argument(fmt::format("[rosa] {}: mask '{}' must be a 2-D BOOL tensor, got {} {}", path, name,
                                              dtype_name(t.dtype()), shape_str(t.shape())));
    const auto mi = t.to_vector<int32_t>();
    const std::vector<uint8_t> m(mi.begin(), mi.end());
    std::vector<float> zeros(m.size(), 0.0f);
    out[name] = csr_from_dense(zeros.data(), m.data(), t.size(0), t.size(1));
  }
  return out;
}

}  // namespace rf::peft
