// bitsandbytes' quantization numerics (see quant.h for what is exact and where it was read).
#include "engine/quant.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace rf::quant {

namespace {

// Refuse NaN/Inf before touching anything: a NaN would fall through the decision trees to code 0 and
// poison a whole block's absmax silently.
void check_finite(const float* x, int64_t n, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      throw std::invalid_argument(
          fmt::format("[quant] {}: element {} is {}; NaN and Inf cannot be quantized", what, i, x[i]));
}

void check_count(int64_t n, const void* p, const char* what) {
  if (n < 0) throw std::invalid_argument(fmt::format("[quant] {}: negative element count {}", what, n));
  if (n > 0 && p == nullptr) throw std::invalid_argument(fmt::format("[quant] {}: null input", what));
}

float block_absmax(const float* x, int64_t len) {
  float m = 0.0f;
  for (int64_t i = 0; i < len; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// x * (1/absmax) in f32, as the kernels scale. A subnormal absmax makes the reciprocal overflow to
// inf (the GPU flushes it to zero instead); there we divide, which bitsandbytes leaves undefined.
struct Scaler {
  float absmax, inv;
  explicit Scaler(float a) : absmax(a), inv(a == 0.0f ? 0.0f : 1.0f / a) {}  // a zero block is never scaled
  float operator()(float x) const { return std::isinf(inv) ? x / absmax : x * inv; }
};

// dQuantizeNF4's pivots, the literals of csrc/kernels.cu: the exact midpoints of the NF4 table, each
// rounded once to f32 as a C++ float literal is. Four of them (indices 0, 8, 12, 14) are 1 ulp from
// (code[i] + code[i+1]) / 2 computed in f32, which bitsandbytes' torch fallback bucketizes on; only a
// value sitting on that ulp codes apart. Strict `>`: a value on a pivot takes the lower code.
constexpr std::array<float, 15> kNf4Pivots = {
    -0.8480964004993439f,  -0.6106329262256622f,   -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
    -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,   0.2035212516784668f,
    0.2920137718319893f,   0.3893125355243683f,    0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f};

// dQuantizeFP4's pivots on |x|, ascending. They are the kernel's literals, NOT the f32 midpoints: five
// of them sit 1 to 14 ulps off (0.583333f is 6 ulps below (1/2 + 2/3) / 2), and we keep the kernel's.
constexpr std::array<float, 7> kFp4Pivots = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                             0.4166667f,  0.583333f,  0.8333333f};
// The FP4 bit pattern (without sign) of each magnitude rank: 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1.
constexpr std::array<uint8_t, 8> kFp4RankToBits = {0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011};

// Codes of 0.0: what a zero block and the pad nibble get.
uint8_t zero_code(Type4 t) { return t == Type4::NF4 ? 7 : 0; }

constexpr int kDynamicZero = 127;  // dynamic_map()[127] == 0.0f

}  // namespace

const std::array<float, 16>& code_table(Type4 type) {
  // functional.py get_4bit_type("nf4"): the normal-float quantiles, normalized to [-1, 1].
  static const std::array<float, 16> nf4 = {-1.0f,
                                            -0.6961928009986877f,
                                            -0.5250730514526367f,
                                            -0.39491748809814453f,
                                            -0.28444138169288635f,
                                            -0.18477343022823334f,
                                            -0.09105003625154495f,
                                            0.0f,
                                            0.07958029955625534f,
                                            0.16093020141124725f,
                                            0.24611230194568634f,
                                            0.33791524171829224f,
                                            0.44070982933044434f,
                                            0.5626170039176941f,
                                            0.7229568362236023f,
                                            1.0f};
  // get_4bit_type("fp4"): [0, 0.0625, 8, 12, 4, 6, 2, 3] and their negatives, divided by 12 in f32.
  // Index 8 is +0.0 there (Python's int -0); the CUDA kernel decodes it as -0.0, the same number.
  static const std::array<float, 16> fp4 = {0.0f,          0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f,
                                            4.0f / 12.0f,  6.0f / 12.0f,     2.0f / 12.0f,  3.0f / 12.0f,
                                            0.0f,          -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
                                            -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f};
  return type == Type4::NF4 ? nf4 : fp4;
}

const std::array<float, 256>& dynamic_map() {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as bitsandbytes' own function
  // returns it under torch 1.13 (Debian's python3-torch): 7 decades of 2^i means of linspace(0.1, 1),
  // both signs, plus 0 and 1. torch's f32 linspace rounding varies by version and CPU, so another
  // torch can give entries 1 ulp apart; checkpoints carry their nested_quant_map, and loading uses it.
  static const std::array<float, 256> map = {
      -0.992968738f,    -0.978906214f,    -0.96484375f,     -0.950781226f,
      -0.936718702f,    -0.922656238f,    -0.908593774f,    -0.89453125f,
      -0.880468726f,    -0.866406202f,    -0.852343738f,    -0.838281214f,
      -0.82421875f,     -0.810156226f,    -0.796093702f,    -0.782031238f,
      -0.767968774f,    -0.75390625f,     -0.739843786f,    -0.725781262f,
      -0.711718798f,    -0.697656274f,    -0.68359375f,     -0.669531286f,
      -0.655468762f,    -0.641406238f,    -0.627343774f,    -0.61328125f,
      -0.599218726f,    -0.585156262f,    -0.571093798f,    -0.557031274f,
      -0.54296875f,     -0.528906226f,    -0.514843762f,    -0.500781238f,
      -0.486718774f,    -0.47265625f,     -0.458593726f,    -0.444531262f,
      -0.430468738f,    -0.416406214f,    -0.40234375f,     -0.388281226f,
      -0.374218762f,    -0.360156238f,    -0.346093714f,    -0.33203125f,
      -0.317968726f,    -0.303906262f,    -0.289843738f,    -0.275781274f,
      -0.26171875f,     -0.247656256f,    -0.233593762f,    -0.219531253f,
      -0.205468744f,    -0.19140625f,     -0.177343741f,    -0.163281247f,
      -0.149218753f,    -0.135156244f,    -0.12109375f,     -0.107031256f,
      -0.0985937491f,   -0.0957812443f,   -0.0929687545f,   -0.0901562497f,
      -0.0873437524f,   -0.0845312476f,   -0.0817187428f,   -0.078906253f,
      -0.0760937482f,   -0.0732812509f,   -0.0704687461f,   -0.0676562563f,
      -0.0648437515f,   -0.0620312467f,   -0.0592187531f,   -0.0564062484f,
      -0.053593751f,    -0.05078125f,     -0.047968749f,    -0.0451562516f,
      -0.0423437469f,   -0.0395312496f,   -0.0367187522f,   -0.0339062475f,
      -0.0310937501f,   -0.0282812472f,   -0.0254687499f,   -0.0226562507f,
      -0.0198437497f,   -0.0170312505f,   -0.0142187504f,   -0.0114062503f,
      -0.00971874967f,  -0.00915624946f,  -0.00859375019f,  -0.00803124998f,
      -0.00746874977f,  -0.00690625003f,  -0.00634374982f,  -0.00578125007f,
      -0.00521875033f,  -0.00465624966f,  -0.00409374991f,  -0.00353124971f,
      -0.00296874996f,  -0.00240624999f,  -0.00184375001f,  -0.00128124992f,
      -0.000943750085f, -0.000831249985f, -0.00071875006f,  -0.000606250076f,
      -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
      -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f,
      -7.7499999e-06f,  -3.25000019e-06f, -5.50000038e-07f, 0.0f,
      5.50000038e-07f,  3.25000019e-06f,  7.7499999e-06f,   2.12499981e-05f,
      4.37499984e-05f,  6.62500024e-05f,  8.87499991e-05f,  0.000156250011f,
      0.000268750038f,  0.000381250022f,  0.000493750034f,  0.000606250076f,
      0.00071875006f,   0.000831249985f,  0.000943750085f,  0.00128124992f,
      0.00184375001f,   0.00240624999f,   0.00296874996f,   0.00353124971f,
      0.00409374991f,   0.00465624966f,   0.00521875033f,   0.00578125007f,
      0.00634374982f,   0.00690625003f,   0.00746874977f,   0.00803124998f,
      0.00859375019f,   0.00915624946f,   0.00971874967f,   0.0114062503f,
      0.0142187504f,    0.0170312505f,    0.0198437497f,    0.0226562507f,
      0.0254687499f,    0.0282812472f,    0.0310937501f,    0.0339062475f,
      0.0367187522f,    0.0395312496f,    0.0423437469f,    0.0451562516f,
      0.047968749f,     0.05078125f,      0.053593751f,     0.0564062484f,
      0.0592187531f,    0.0620312467f,    0.0648437515f,    0.0676562563f,
      0.0704687461f,    0.0732812509f,    0.0760937482f,    0.078906253f,
      0.0817187428f,    0.0845312476f,    0.0873437524f,    0.0901562497f,
      0.0929687545f,    0.0957812443f,    0.0985937491f,    0.107031256f,
      0.12109375f,      0.135156244f,     0.149218753f,     0.163281247f,
      0.177343741f,     0.19140625f,      0.205468744f,     0.219531253f,
      0.233593762f,     0.247656256f,     0.26171875f,      0.275781274f,
      0.289843738f,     0.303906262f,     0.317968726f,     0.33203125f,
      0.346093714f,     0.360156238f,     0.374218762f,     0.388281226f,
      0.40234375f,      0.416406214f,     0.430468738f,     0.444531262f,
      0.458593726f,     0.47265625f,      0.486718774f,     0.500781238f,
      0.514843762f,     0.528906226f,     0.54296875f,      0.557031274f,
      0.571093798f,     0.585156262f,     0.599218726f,     0.61328125f,
      0.627343774f,     0.641406238f,     0.655468762f,     0.669531286f,
      0.68359375f,      0.697656274f,     0.711718798f,     0.725781262f,
      0.739843786f,     0.75390625f,      0.767968774f,     0.782031238f,
      0.796093702f,     0.810156226f,     0.82421875f,      0.838281214f,
      0.852343738f,     0.866406202f,     0.880468726f,     0.89453125f,
      0.908593774f,     0.922656238f,     0.936718702f,     0.950781226f,
      0.96484375f,      0.978906214f,     0.992968738f,     1.0f,
  };
  return map;
}

bool valid_blocksize_4bit(int blocksize) {
  return blocksize >= 32 && blocksize <= 4096 && (blocksize & (blocksize - 1)) == 0;
}

uint8_t encode_nf4(float x) {
  // The kernel's tree is a binary search over ascending pivots with strict `>`: the code is the count
  // of pivots below x.
  uint8_t code = 0;
  for (float p : kNf4Pivots) code += x > p ? 1 : 0;
  return code;
}

uint8_t encode_fp4(float x) {
  // Sign from x < 0 (so -0.0 and tiny negatives below the first pivot give code 8, "-0"); magnitude
  // by the tree on |x|.
  const uint8_t sign = x < 0 ? 0b1000 : 0;
  const float a = std::fabs(x);
  int rank = 0;
  for (float p : kFp4Pivots) rank += a > p ? 1 : 0;
  return static_cast<uint8_t>(sign | kFp4RankToBits[rank]);
}

Quant4 quantize_4bit(const float* w, int64_t n, int blocksize, Type4 type) {
  check_count(n, w, "quantize_4bit");
  if (!valid_blocksize_4bit(blocksize))
    throw std::invalid_argument(fmt::format(
        "[quant] quantize_4bit: blocksize {} is not one of bitsandbytes' 32, 64, 128, ..., 4096", blocksize));
  check_finite(w, n, "quantize_4bit");
  Quant4 q;
  q.type = type;
  q.blocksize = blocksize;
  q.n = n;
  q.packed.assign(static_cast<size_t>((n + 1) / 2), 0);
  q.absmax.resize(static_cast<size_t>((n + blocksize - 1) / blocksize));
  auto encode = type == Type4::NF4 ? encode_nf4 : encode_fp4;
  for (size_t b = 0; b < q.absmax.size(); ++b) {
    const int64_t start = static_cast<int64_t>(b) * blocksize, len = std::min<int64_t>(blocksize, n - start);
    const float a = block_absmax(w + start, len);
    q.absmax[b] = a;
    const Scaler scale(a);
    for (int64_t i = start; i < start + len; ++i) {
      const uint8_t c = a == 0.0f ? zero_code(type) : encode(scale(w[i]));
      // Even element in the high nibble (kernel: qvals[j] = q(vals[2j]) << 4 | q(vals[2j+1])).
      q.packed[static_cast<size_t>(i / 2)] |= static_cast<uint8_t>(i % 2 == 0 ? c << 4 : c);
    }
  }
  if (n % 2 == 1) q.packed.back() |= zero_code(type);  // the kernel quantizes a 0.0 pad
  return q;
}

void dequantize_4bit(const Quant4& q, std::span<const float> absmax, float* out) {
  const size_t blocks = static_cast<size_t>((q.n + q.blocksize - 1) / std::max(q.blocksize, 1));
  if (!valid_blocksize_4bit(q.blocksize) || q.n < 0)
    throw std::invalid_argument(fmt::format("[quant] dequantize_4bit: bad blocksize {} or count {}", q.blocksize, q.n));
  if (q.packed.size() != static_cast<size_t>((q.n + 1) / 2) || absmax.size() != blocks)
    throw std::invalid_argument(
        fmt::format("[quant] dequantize_4bit: {} elements need {} packed bytes and {} absmax values, got {} and {}",
                    q.n, (q.n + 1) / 2, blocks, q.packed.size(), absmax.size()));
  const auto& table = code_table(q.type);
  for (int64_t i = 0; i < q.n; ++i) {
    const uint8_t byte = q.packed[static_cast<size_t>(i / 2)];
    const uint8_t c = i % 2 == 0 ? byte >> 4 : byte & 0x0F;
    out[i] = table[c] * absmax[static_cast<size_t>(i / q.blocksize)];
  }
}

std::vector<float> dequantize_4bit(const Quant4& q) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(q.n, 0)));
  dequantize_4bit(q, q.absmax, out.data());
  return out;
}

namespace {
// dQuantize<0> of csrc/kernels.cu: a 7-step binary search from pivot 127 that lands on an even index
// p, then a comparison with the f32 midpoint to p's neighbour on x's side. The result is the nearest
// code, a value on a midpoint going to the even index.
uint8_t encode_dynamic(const std::array<float, 256>& code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f, val = code[127];
  for (int step = 64; step > 0; step >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = code[static_cast<size_t>(pivot)];
  }
  if (upper_pivot == 255) upper = code[255];
  if (lower_pivot == 0) lower = code[0];
  if (x > val) return static_cast<uint8_t>(x > (upper + val) * 0.5f ? upper_pivot : pivot);
  return static_cast<uint8_t>(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}
}  // namespace

void quantize_blockwise_dynamic(const float* x, int64_t n, int blocksize, uint8_t* codes, float* absmax) {
  check_count(n, x, "quantize_blockwise_dynamic");
  if (blocksize <= 0)
    throw std::invalid_argument(fmt::format("[quant] quantize_blockwise_dynamic: blocksize {}", blocksize));
  check_finite(x, n, "quantize_blockwise_dynamic");
  const auto& code = dynamic_map();
  for (int64_t start = 0, b = 0; start < n; start += blocksize, ++b) {
    const int64_t len = std::min<int64_t>(blocksize, n - start);
    const float a = block_absmax(x + start, len);
    absmax[b] = a;
    const Scaler scale(a);
    for (int64_t i = start; i < start + len; ++i)
      codes[i] = a == 0.0f ? kDynamicZero : encode_dynamic(code, scale(x[i]));
  }
}

NestedAbsmax compress_absmax(std::span<const float> absmax) {
  NestedAbsmax s;
  const int64_t n = static_cast<int64_t>(absmax.size());
  check_finite(absmax.data(), n, "compress_absmax");
  double sum = 0;
  for (float a : absmax) sum += a;
  s.offset = n > 0 ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
  std::vector<float> centered(absmax.size());
  for (size_t i = 0; i < absmax.size(); ++i) centered[i] = absmax[i] - s.offset;
  s.codes.resize(absmax.size());
  s.nested_absmax.resize(static_cast<size_t>((n + s.nested_blocksize - 1) / s.nested_blocksize));
  quantize_blockwise_dynamic(centered.data(), n, s.nested_blocksize, s.codes.data(), s.nested_absmax.data());
  return s;
}

std::vector<float> decompress_absmax(const NestedAbsmax& s) {
  const size_t blocks = (s.codes.size() + static_cast<size_t>(s.nested_blocksize) - 1) /
                        static_cast<size_t>(std::max(s.nested_blocksize, 1));
  if (s.nested_blocksize <= 0 || s.nested_absmax.size() != blocks)
    throw std::invalid_argument(fmt::format("[quant] decompress_absmax: {} codes need {} nested absmax values, got {}",
                                            s.codes.size(), blocks, s.nested_absmax.size()));
  const auto& code = dynamic_map();
  std::vector<float> out(s.codes.size());
  for (size_t i = 0; i < out.size(); ++i) {
    // Two roundings, as torch does them in two ops; volatile keeps -march=native from fusing an FMA.
    volatile float scaled = code[s.codes[i]] * s.nested_absmax[i / static_cast<size_t>(s.nested_blocksize)];
    out[i] = scaled + s.offset;
  }
  return out;
}

Int8Rows quantize_int8_rows(const float* w, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0)
    throw std::invalid_argument(fmt::format("[quant] quantize_int8_rows: bad shape ({}, {})", rows, cols));
  check_count(rows * cols, w, "quantize_int8_rows");
  check_finite(w, rows * cols, "quantize_int8_rows");
  Int8Rows q;
  q.rows = rows;
  q.cols = cols;
  q.q.assign(static_cast<size_t>(rows * cols), 0);
  q.scb.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    const float a = block_absmax(row, cols);
    q.scb[static_cast<size_t>(r)] = a;
    if (a == 0.0f) continue;  // the GPU gets NaN -> 0 here; zero codes without dividing by zero
    const float scale = 127.0f / a;
    for (int64_t c = 0; c < cols; ++c) {
      // nearbyint rounds half to even in the default mode, like __float2int_rn and torch.round.
      const float v = std::isinf(scale) ? (row[c] / a) * 127.0f : row[c] * scale;
      q.q[static_cast<size_t>(r * cols + c)] = static_cast<int8_t>(std::nearbyint(v));
    }
  }
  return q;
}

std::vector<float> dequantize_int8_rows(const Int8Rows& q) {
  if (q.q.size() != static_cast<size_t>(q.rows * q.cols) || q.scb.size() != static_cast<size_t>(q.rows))
    throw std::invalid_argument(
        fmt::format("[quant] dequantize_int8_rows: ({}, {}) needs {} codes and {} SCB, got {} and {}", q.rows, q.cols,
                    q.rows * q.cols, q.rows, q.q.size(), q.scb.size()));
  const float inv127 = 7.874015718698502e-3f;  // the constant of int8_vectorwise_dequant (f32(1/127))
  std::vector<float> out(q.q.size());
  for (int64_t r = 0; r < q.rows; ++r)
    for (int64_t c = 0; c < q.cols; ++c) {
      const size_t i = static_cast<size_t>(r * q.cols + c);
      out[i] = (static_cast<float>(q.q[i]) * q.scb[static_cast<size_t>(r)]) * inv127;
    }
  return out;
}

}  // namespace rf::quant
