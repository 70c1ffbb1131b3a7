#pragma once
// The JSON quant state of a bitsandbytes 4-bit tensor (the U8 bytes stored under
// "<weight>.quant_state.bitsandbytes__nf4|fp4"), parsed and checked on its own: it depends on nothing but
// the bytes, so the safetensors fuzz target runs it on every quant state it meets.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace rf::models {

struct BnbQuantState {
  std::string quant_type;  // "nf4" | "fp4", equal to the key's suffix
  int blocksize = 64;      // 32, 64, ..., 4096
  std::string dtype;       // what the weight was before ("bfloat16", ...), "" when absent
  int64_t rows = 0, cols = 0;
  bool nested = false;  // double quantization
  int nested_blocksize = 0;
  float nested_offset = 0;
};

// Throws std::runtime_error("[bnb] <file>: '<key>': <what>") for bytes that are not such a state.
BnbQuantState parse_bnb_quant_state(std::span<const std::byte> bytes, const std::string& file, const std::string& key);

}  // namespace rf::models
