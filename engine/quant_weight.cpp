// Quantized frozen weights on a backend (see quant_weight.h for the storage-form decision).
#include "engine/quant_weight.h"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

#include "engine/backend.h"

namespace rf {

std::string_view quant_type_name(QuantType t) {
  switch (t) {
    case QuantType::Int8: return "int8";
    case QuantType::NF4: return "nf4";
    case QuantType::FP4: return "fp4";
  }
  return "?";
}

std::optional<QuantType> quant_type_from_name(std::string_view s) {
  if (s == "int8") return QuantType::Int8;
  if (s == "nf4") return QuantType::NF4;
  if (s == "fp4") return QuantType::FP4;
  return std::nullopt;
}

bool QuantSpec::skips(const std::string& path) const {
  // "lm_head" matches "lm_head" and "x.lm_head"; "mlp.down_proj" matches "...layers.3.mlp.down_proj".
  for (const auto& s : skip_modules) {
    if (s.empty()) continue;
    if (path == s) return true;
    if (path.size() > s.size() && path.ends_with(s) && path[path.size() - s.size() - 1] == '.') return true;
  }
  return false;
}

void QuantSpec::validate() const {
  if (is_4bit(type) && !quant::valid_blocksize_4bit(blocksize))
    throw std::invalid_argument(fmt::format(
        "[quant] blocksize {} is not one bitsandbytes accepts (32, 64, 128, 256, 512, 1024, 2048, 4096)", blocksize));
  if (compute != DType::F32 && compute != DType::BF16)
    throw std::invalid_argument(fmt::format("[quant] compute dtype must be f32 or bf16, got {}", dtype_name(compute)));
  if (double_quant && !is_4bit(type))
    throw std::invalid_argument("[quant] double quantization applies to nf4 and fp4, not int8");
}

QuantWeight QuantWeight::to(Device d) const {
  QuantWeight q = *this;
  if (q.codes.defined()) q.codes = q.codes.to(d);
  if (q.scales.defined()) q.scales = q.scales.to(d);
  return q;
}

size_t QuantWeight::storage_bytes() const {
  size_t n = 0;
  if (codes.defined()) n += size_t(codes.numel()) * 4;
  if (scales.defined()) n += size_t(scales.numel()) * 4;
  return n;
}

Tensor code_words(const uint8_t* bytes, int64_t n, Device d) {
  const int64_t words = (n + 3) / 4;
  std::vector<int32_t> w(size_t(words), 0);
  if (n > 0) std::memcpy(w.data(), bytes, size_t(n));
  return from_data(w, {words}, d);
}

std::vector<uint8_t> code_bytes(const Tensor& words, int64_t n) {
  if (words.dtype() != DType::I32 || words.numel() * 4 < n)
    throw std::invalid_argument(
        fmt::format("[quant] code container of {} words cannot hold {} bytes", words.numel(), n));
  std::vector<int32_t> w = words.to_vector<int32_t>();
  std::vector<uint8_t> out(static_cast<size_t>(n));
  if (n > 0) std::memcpy(out.data(), w.data(), size_t(n));
  return out;
}

QuantWeight quantize_weight(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec, Device d,
                            std::string source_dtype) {
  spec.validate();
  QuantWeight q;
  q.type = spec.type;
  q.rows = rows;
  q.cols = cols;
  q.blocksize = spec.blocksize;
  q.compute = spec.compute;
  q.source_dtype = std::move(source_dtype);
  if (spec.type == QuantType::Int8) {
    quant::Int8Rows r = quant::quantize_int8_rows(w, rows, cols);
    q.codes = code_words(reinterpret_cast<const uint8_t*>(r.q.data()), rows * cols, d);
    q.scales = from_data(r.scb, {rows}, d);
    q.blocksize = 0;
    return q;
  }
  const quant::Type4 t = spec.type == QuantType::NF4 ? quant::Type4::NF4 : quant::Type4::FP4;
  quant::Quant4 r = quant::quantize_4bit(w, rows * cols, spec.blocksize, t);
  q.codes = code_words(r.packed.data(), int64_t(r.packed.size()), d);
  if (spec.double_quant) {
    auto nested = std::make_shared<quant::NestedAbsmax>(quant::compress_absmax(r.absmax));
    std::vector<float> absmax = quant::decompress_absmax(*nested);  // what bitsandbytes computes with
    q.scales = from_data(absmax, {int64_t(absmax.size())}, d);
    q.nested = std::move(nested);
  } else {
    q.scales = from_data(r.absmax, {int64_t(r.absmax.size())}, d);
  }
  return q;
}

QuantWeight quantize_weight(const Tensor& w, const QuantSpec& spec, Device d) {
  if (w.dim() != 2 || !is_float(w.dtype()))
    throw std::invalid_argument(
        fmt::format("[quant] expects a 2-D float weight, got {} {}", dtype_name(w.dtype()), shape_str(w.shape())));
  const char* src = w.dtype() == DType::BF16 ? "bfloat16" : w.dtype() == DType::F16 ? "float16" : "float32";
  std::vector<float> host = w.to_vector<float>();  // row-major whatever the strides
  return quantize_weight(host.data(), w.size(0), w.size(1), spec, d, src);
}

void validate(const QuantWeight& w, std::string_view what) {
  auto bad = [&](const std::string& m) { throw std::invalid_argument(fmt::format("[quant] {}: {}", what, m)); };
  if (w.rows <= 0 || w.cols <= 0) bad(fmt::format("shape ({}, {}) must be positive", w.rows, w.cols));
  if (is_4bit(w.type) && !quant::valid_blocksize_4bit(w.blocksize))
    bad(fmt::format("blocksize {} is not one of 32, 64, ..., 4096", w.blocksize));
  if (!w.codes.defined() || w.codes.dtype() != DType::I32 || w.codes.dim() != 1 ||
      w.codes.numel() != (w.code_bytes() + 3) / 4)
    bad(fmt::format("codes must be {} bytes", w.code_bytes()));
  if (!w.scales.defined() || w.scales.dtype() != DType::F32 || w.scales.dim() != 1 || w.scales.numel() != w.blocks())
    bad(fmt::format("expected {} {} scales, got {}", w.blocks(), is_4bit(w.type) ? "absmax" : "SCB",
                    w.scales.defined() ? w.scales.numel() : 0));
  if (!(w.scales.device() == w.codes.device())) bad("codes and scales live on different devices");
  if (w.compute != DType::F32 && w.compute != DType::BF16 && w.compute != DType::F64)
    bad("compute dtype must be f32 or bf16");
}

Tensor dequantize(const QuantWeight& w) {
  Tensor out = empty({w.rows, w.cols}, DType::F32, w.device());
  w.codes.backend().dequantize(w, out);
  return out;
}

}  // namespace rf
