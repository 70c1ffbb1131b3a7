// safetensors header validation: every rule of the reference reader (huggingface/safetensors
// tensor.rs read_metadata + Metadata::validate). Depends only on bytes, JSON and fmt, so the fuzz
// target can compile it alone under sanitizers.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "engine/json_io.h"
#include "engine/safetensors.h"
#include "engine/utf8.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; big-endian hosts are not supported");

namespace rf::safetensors {

namespace {

struct DTypeInfo {
  StDType t;
  std::string_view name;
  size_t bits;
};
constexpr std::array<DTypeInfo, 22> kDTypes{{
    {StDType::BOOL, "BOOL", 8},
    {StDType::F4, "F4", 4},
    {StDType::F6_E2M3, "F6_E2M3", 6},
    {StDType::F6_E3M2, "F6_E3M2", 6},
    {StDType::U8, "U8", 8},
    {StDType::I8, "I8", 8},
    {StDType::F8_E5M2, "F8_E5M2", 8},
    {StDType::F8_E4M3, "F8_E4M3", 8},
    {StDType::F8_E8M0, "F8_E8M0", 8},
    {StDType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {StDType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {StDType::I16, "I16", 16},
    {StDType::U16, "U16", 16},
    {StDType::F16, "F16", 16},
    {StDType::BF16, "BF16", 16},
    {StDType::I32, "I32", 32},
    {StDType::U32, "U32", 32},
    {StDType::F32, "F32", 32},
    {StDType::C64, "C64", 64},
    {StDType::F64, "F64", 64},
    {StDType::I64, "I64", 64},
    {StDType::U64, "U64", 64},
}};

[[noreturn]] void fail(std::string_view what, const std::string& msg) {
  throw std::runtime_error(fmt::format("[safetensors] {}: {}", what, msg));
}

uint64_t as_u64(const nlohmann::json& v, std::string_view what, const std::string& name, const char* field) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    fail(what, fmt::format("invalid header deserialization: tensor {}: {} must hold non-negative integers",
                           quote_name(name), field));
  return v.get<uint64_t>();
}

TensorInfo parse_entry(const std::string& name, const nlohmann::json& e, std::string_view what) {
  auto bad = [&](const std::string& why) {
    fail(what, fmt::format("invalid header deserialization: tensor {}: {}", quote_name(name), why));
  };
  if (!e.is_object()) bad("entry is not an object");
  for (auto it = e.begin(); it != e.end(); ++it)
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
      bad(fmt::format("unknown field {}", quote_name(it.key())));
  if (!e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
    bad("needs dtype, shape and data_offsets");
  TensorInfo t;
  t.name = name;
  if (!e["dtype"].is_string()) bad("dtype is not a string");
  auto dt = parse_dtype(e["dtype"].get_ref<const std::string&>());
  if (!dt) bad(fmt::format("unknown dtype {}", quote_name(e["dtype"].get_ref<const std::string&>())));
  t.dtype = *dt;
  if (!e["shape"].is_array()) bad("shape is not a list");
  for (const auto& d : e["shape"]) t.shape.push_back(as_u64(d, what, name, "shape"));
  const auto& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2) bad("data_offsets must be [begin, end]");
  t.begin = as_u64(off[0], what, name, "data_offsets");
  t.end = as_u64(off[1], what, name, "data_offsets");
  return t;
}

}  // namespace

std::string quote_name(std::string_view name) {
  std::string out = "'";
  for (char c : name) {
    if (uint8_t(c) < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", uint8_t(c));
    else
      out += c;
  }
  return out + "'";
}

std::string_view dtype_string(StDType t) { return kDTypes[size_t(t)].name; }
size_t dtype_bits(StDType t) { return kDTypes[size_t(t)].bits; }

std::optional<StDType> parse_dtype(std::string_view s) {
  for (const auto& d : kDTypes)
    if (d.name == s) return d.t;
  return std::nullopt;
}

std::optional<DType> to_rf(StDType t) {
  switch (t) {
    case StDType::F32: return DType::F32;
    case StDType::F64: return DType::F64;
    case StDType::F16: return DType::F16;
    case StDType::BF16: return DType::BF16;
    case StDType::I32: return DType::I32;
    case StDType::I64: return DType::I64;
    case StDType::BOOL: return DType::Bool;
    default: return std::nullopt;
  }
}

StDType from_rf(DType t) {
  switch (t) {
    case DType::F32: return StDType::F32;
    case DType::F64: return StDType::F64;
    case DType::F16: return StDType::F16;
    case DType::BF16: return StDType::BF16;
    case DType::I32: return StDType::I32;
    case DType::I64: return StDType::I64;
    case DType::Bool: return StDType::BOOL;
    default: break;
  }
  throw std::invalid_argument("[safetensors] dtype has no safetensors name");
}

Header parse(std::span<const std::byte> file, std::string_view what) {
  if (file.size() < 8)
    fail(what,
         fmt::format("header too small: the file has {} bytes, fewer than the 8-byte length prefix", file.size()));
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  if (n > kMaxHeaderSize) fail(what, fmt::format("header too large: {} bytes (limit {})", n, kMaxHeaderSize));
  if (8 + n > file.size())
    fail(what, fmt::format("invalid header length: {} header bytes announced at byte 0 but the file has {} bytes", n,
                           file.size()));
  const auto* h = reinterpret_cast<const unsigned char*>(file.data() + 8);
  if (size_t bad = utf8_invalid_at({reinterpret_cast<const char*>(h), size_t(n)}); bad != n)
    fail(what, fmt::format("invalid header: not UTF-8 at byte offset {}", 8 + bad));
  size_t first = 0;
  while (first < n && (h[first] == ' ' || h[first] == '\t' || h[first] == '\n' || h[first] == '\r')) ++first;
  if (first == n || h[first] != '{')
    fail(what, fmt::format("invalid header: does not start with '{{' (byte offset {})", 8 + first));

  // nlohmann keeps the last of duplicate keys silently, so the callback tracks the keys of every
  // open object: a repeated tensor name, field or metadata key would make the file ambiguous.
  std::vector<std::set<std::string>> open_objects;
  std::string last_top_key, dup;
  auto cb = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start)
      open_objects.emplace_back();
    else if (ev == E::object_end && !open_objects.empty())
      open_objects.pop_back();
    else if (ev == E::key && !open_objects.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second && dup.empty())
        dup = open_objects.size() == 1 ? fmt::format("duplicate tensor name {}", quote_name(k))
              : open_objects.size() == 2
                  ? fmt::format("duplicate key {} in {}", quote_name(k), quote_name(last_top_key))
                  : fmt::format("duplicate key {}", quote_name(k));
      if (open_objects.size() == 1) last_top_key = k;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(h, h + n, cb);
  } catch (const nlohmann::json::parse_error& e) {
    // The header sits inside a binary file: a file offset locates the error better than a line.
    fail(what, fmt::format("invalid header deserialization: invalid JSON at byte offset {}: {}",
                           8 + std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, n), json_reason_text(e)));
  } catch (const nlohmann::json::exception& e) {
    fail(what, fmt::format("invalid header deserialization: {}", json_reason_text(e)));
  }
  if (!dup.empty()) fail(what, fmt::format("invalid header deserialization: {}", dup));
  if (!j.is_object()) fail(what, "invalid header deserialization: the header is not a JSON object");

  Header hd;
  hd.header_size = n;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail(what, "invalid header deserialization: __metadata__ must map strings to strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          fail(what, fmt::format("invalid header deserialization: __metadata__ value of {} is not a string",
                                 quote_name(m.key())));
        hd.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    hd.tensors.push_back(parse_entry(it.key(), *it, what));
  }
  std::stable_sort(hd.tensors.begin(), hd.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& t : hd.tensors) {
    if (t.begin != expected || t.end < t.begin)
      fail(what,
           fmt::format("invalid offset: tensor {} has data_offsets [{}, {}] but must start at {} (no gaps or overlaps)",
                       quote_name(t.name), t.begin, t.end, expected));
    uint64_t numel = 1, nbits = 0;
    for (uint64_t d : t.shape)
      if (__builtin_mul_overflow(numel, d, &numel))
        fail(what, fmt::format("validation overflow: the shape of tensor {}", quote_name(t.name)));
    if (__builtin_mul_overflow(numel, uint64_t(dtype_bits(t.dtype)), &nbits))
      fail(what, fmt::format("validation overflow: the byte size of tensor {}", quote_name(t.name)));
    if (nbits % 8)
      fail(what,
           fmt::format("misaligned slice: tensor {} does not fill whole bytes ({} bits)", quote_name(t.name), nbits));
    if (t.end - t.begin != nbits / 8)
      fail(what, fmt::format("tensor invalid info: tensor {} ({} {}) needs {} bytes but data_offsets span {}",
                             quote_name(t.name), dtype_string(t.dtype), nlohmann::json(t.shape).dump(), nbits / 8,
                             t.end - t.begin));
    expected = t.end;
  }
  const uint64_t data = file.size() - 8 - n;
  if (expected != data)
    fail(what,
         expected < data
             ? fmt::format("incomplete buffer: {} bytes of trailing data after the last tensor (data ends at byte {})",
                           data - expected, 8 + n + expected)
             : fmt::format("incomplete buffer: tensors need {} data bytes but the file holds {}", expected, data));
  return hd;
}

}  // namespace rf::safetensors
