#pragma once
// bitsandbytes' weight quantization numerics on host buffers (issue 19, step 1): 4-bit NF4/FP4
// blockwise with an f32 absmax per block, double quantization of that absmax with the signed 8-bit
// dynamic map (blocks of 256, mean offset), and LLM.int8's row-wise int8 (SCB). Plain spans and
// vectors, no Tensor: the loader, the `quantize` command and the GEMM tiles all feed it raw buffers.
//
// What "exact" means here (bitsandbytes, csrc/kernels.cu and bitsandbytes/functional.py):
//   - 4-bit: absmax = max |w| of the block in f32; each value is scaled as w * (1.0f / absmax) in f32
//     and coded by the kernel's decision tree (dQuantizeNF4 / dQuantizeFP4): strict `>` against its
//     float literals as pivots. FP4 takes its sign from x < 0, so tiny negatives code as "-0" (8). The GPU build uses
//     --use_fast_math, so its reciprocal can be 1 ulp off the IEEE one we compute (as bitsandbytes' CPU path does); a
//     value within an ulp of a pivot may then code apart.
//   - All-zero block: absmax 0 and every value takes the code of 0.0 (NF4 7, FP4 0), as the CPU path
//     does (it clamps the divisor to 1e-38). The CUDA kernel computes 0 * inf = NaN there and lands on
//     code 0 (NF4 -1.0), which also decodes to 0 but only while absmax stays exactly 0.
//   - Packing: two codes per byte, the element with the even index in the HIGH nibble; an odd count
//     pads the last low nibble with the code of 0.0, as the kernel does (it loads the pad as 0).
//   - NaN and Inf are refused with std::invalid_argument("[quant] ...") naming the element.
#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace rf::quant {

enum class Type4 { NF4, FP4 };

// The 16 values bitsandbytes' get_4bit_type returns (its `quant_map`), in code order. NF4 is sorted;
// FP4 is in bit-pattern order: bit 3 the sign, bits 0-2 index {0, 1/192, 2/3, 1, 1/3, 1/2, 1/6, 1/4}.
const std::array<float, 16>& code_table(Type4 type);
// The 256 values of create_dynamic_map(signed=True) (the nested_quant_map), sorted ascending.
const std::array<float, 256>& dynamic_map();

// 32, 64, ..., 4096: the block sizes bitsandbytes' quantize_4bit accepts.
bool valid_blocksize_4bit(int blocksize);
// One value already scaled to [-1, 1] (the kernel's decision trees).
uint8_t encode_nf4(float x);
uint8_t encode_fp4(float x);

struct Quant4 {
  Type4 type = Type4::NF4;
  int blocksize = 64;
  int64_t n = 0;                // element count
  std::vector<uint8_t> packed;  // (n + 1) / 2 bytes
  std::vector<float> absmax;    // one per block, ceil(n / blocksize)
};
Quant4 quantize_4bit(const float* w, int64_t n, int blocksize, Type4 type);
// Writes q.n values: code_table[code] * absmax[block] in f32. absmax may be the f32 one or the one
// decompress_absmax rebuilt from the nested statistics.
void dequantize_4bit(const Quant4& q, std::span<const float> absmax, float* out);
std::vector<float> dequantize_4bit(const Quant4& q);

// Double quantization (compress_statistics / bnb_4bit_use_double_quant): offset = mean(absmax), then
// (absmax - offset) quantized blockwise to the dynamic map. The offset is the mean summed in f64 and
// rounded to f32; torch sums in f32, so a stored offset can differ from bitsandbytes' by an ulp.
struct NestedAbsmax {
  std::vector<uint8_t> codes;        // one per absmax value, indices into dynamic_map()
  std::vector<float> nested_absmax;  // one per block of nested_blocksize
  float offset = 0;
  int nested_blocksize = 256;
};
NestedAbsmax compress_absmax(std::span<const float> absmax);
// dynamic_map()[code] * nested_absmax[block] + offset, each step in f32 (dequantize_blockwise, then
// `absmax += offset`).
std::vector<float> decompress_absmax(const NestedAbsmax& s);

// bitsandbytes' 8-bit blockwise quantization with the dynamic map (kQuantizeBlockwise, General8bit):
// the kernel's binary search, nearest code, a tie going to the even index. Used for the nested absmax.
void quantize_blockwise_dynamic(const float* x, int64_t n, int blocksize, uint8_t* codes, float* absmax);

// LLM.int8 row-wise (Linear8bitLt's CB and SCB): scb[r] = max |w[r, :]|, q = round-half-to-even(w *
// (127.0f / scb[r])) as __float2int_rn and torch.round do; an all-zero row stores scb 0 and codes 0.
struct Int8Rows {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> q;   // rows * cols, row-major
  std::vector<float> scb;  // rows
};
Int8Rows quantize_int8_rows(const float* w, int64_t rows, int64_t cols);
// w = (q * scb) * (1/127 as f32), left to right in f32, as int8_vectorwise_dequant does.
std::vector<float> dequantize_int8_rows(const Int8Rows& q);

}  // namespace rf::quant
