#pragma once
// A frozen Linear weight held in one of bitsandbytes' layouts on a backend (issue 19): int8 row-wise
// (Linear8bitLt's CB + SCB) or 4-bit NF4/FP4 blockwise (Linear4bit's packed codes + absmax).
//
// Why a storage form and not an engine dtype: a quantized weight is only ever read by one op, the
// dequantizing matmul (and by dequantize for merges); it is never viewed, sliced, broadcast or
// differentiated. A sub-byte DType would have to be refused by every other op and kernel, and strides
// and offsets would need nibble units. As a storage form it touches the Linear layer, one op and one
// backend method per backend, and nothing else in the engine changes (specs/architecture.md).
//
// The bytes live in an I32 tensor used as a word container: Vulkan shaders read 32-bit words anyway,
// and the CPU reads them as bytes; the last word is zero-padded.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/quant.h"
#include "engine/tensor.h"

namespace rf {

enum class QuantType : uint8_t { Int8, NF4, FP4 };
std::string_view quant_type_name(QuantType t);  // "int8", "nf4", "fp4"
std::optional<QuantType> quant_type_from_name(std::string_view s);
inline bool is_4bit(QuantType t) { return t != QuantType::Int8; }

// How a model's Linear weights are quantized (the `model_quantization` config, bitsandbytes' names in
// brackets): type [bnb_4bit_quant_type / load_in_8bit], double_quant [bnb_4bit_use_double_quant],
// blocksize (4-bit), compute [bnb_4bit_compute_dtype], skip_modules [llm_int8_skip_modules]: a Linear
// whose dotted path has one of them as a component (or a suffix of components) stays in full precision.
struct QuantSpec {
  QuantType type = QuantType::NF4;
  bool double_quant = false;
  int blocksize = 64;
  DType compute = DType::BF16;  // F32 or BF16: the dtype the dequantized tile and the activation meet in
  std::vector<std::string> skip_modules{"lm_head"};
  bool skips(const std::string& module_path) const;
  void validate() const;  // throws std::invalid_argument("[quant] ...")
};

struct QuantWeight {
  QuantType type = QuantType::NF4;
  int64_t rows = 0, cols = 0;  // the logical (out, in) weight
  int blocksize = 64;          // 4-bit only: blocks run over the row-major flattening of (out, in)
  DType compute = DType::BF16;
  Tensor codes;   // I32 words: 4-bit (rows*cols+1)/2 bytes, element 2i in the high nibble; int8 rows*cols bytes
  Tensor scales;  // F32: 4-bit absmax per block (already decompressed under double quant); int8 SCB per row
  // Under double quantization, the nested statistics as stored (kept so a written file matches the
  // one read bit for bit; compute uses `scales`).
  std::shared_ptr<const quant::NestedAbsmax> nested;
  std::string source_dtype = "bfloat16";  // the quant_state's "dtype": what the weight was before

  bool defined() const { return codes.defined(); }
  Device device() const { return codes.device(); }
  int64_t numel() const { return rows * cols; }
  int64_t code_bytes() const { return is_4bit(type) ? (numel() + 1) / 2 : numel(); }
  int64_t blocks() const { return is_4bit(type) ? (numel() + blocksize - 1) / blocksize : rows; }
  QuantWeight to(Device d) const;
  // Bytes held on the device (codes + scales): what the layer costs instead of rows*cols*4.
  size_t storage_bytes() const;
};

// Wraps host bytes into the word container on `d` (copied; padded to a whole word).
Tensor code_words(const uint8_t* bytes, int64_t n, Device d);
// The bytes back from a word container (n of them).
std::vector<uint8_t> code_bytes(const Tensor& words, int64_t n);

// Quantizes a (rows, cols) weight given as f32 on the host.
QuantWeight quantize_weight(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec, Device d,
                            std::string source_dtype = "bfloat16");
// Any float Tensor (out, in) on any device: brought to host f32 first.
QuantWeight quantize_weight(const Tensor& w, const QuantSpec& spec, Device d);
// The weight in f32 on its device (out, in): the backend's dequantize kernel.
Tensor dequantize(const QuantWeight& w);
// Checks sizes and dtypes of a QuantWeight built by hand or read from a file; throws
// std::invalid_argument("[quant] <what>: ...").
void validate(const QuantWeight& w, std::string_view what);

}  // namespace rf
