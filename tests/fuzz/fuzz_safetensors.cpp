// libFuzzer target for rf::safetensors::parse. Input: a 4-byte little-endian tail length T (low 20
// bits), then a file image; the parser sees the image followed by T filler bytes. parse() never reads
// tensor data, so a real checkpoint's header is a seed of a few KB (make_seeds.py writes them) while
// the data section it describes is only a length. Every rejection must be a one-line
// std::runtime_error naming the input; every accepted header's tensors must tile the data exactly.
// A U8 tensor named like a bitsandbytes quant state is then parsed from its bytes (the seeds carry real
// ones from make_seeds.py) and must parse or be refused the same way.
#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/safetensors.h"
#include "models/bnb_state.h"

#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define RF_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define RF_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define RF_POISON(p, n) ((void)(p), (void)(n))
#define RF_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace {

namespace st = rf::safetensors;

constexpr uint32_t kTailMask = (1u << 20) - 1;  // up to 1 MiB of data: larger than every fixture's

// Places each file at the very end of one reused allocation and poisons the bytes before it: ASan
// still catches a read past either end without allocating (and filling) a data section per input.
class Arena {
 public:
  ~Arena() { RF_UNPOISON(buf_.data(), buf_.size()); }
  std::span<const std::byte> place(std::span<const uint8_t> image, size_t tail) {
    const size_t n = image.size() + tail;
    if (n > buf_.size()) {
      RF_UNPOISON(buf_.data(), buf_.size());
      buf_.assign(n + n / 2, std::byte{0x3f});
    }
    std::byte* start = buf_.data() + buf_.size() - n;
    RF_UNPOISON(buf_.data(), buf_.size());
    if (!image.empty()) std::memcpy(start, image.data(), image.size());  // the tail keeps old bytes
    RF_POISON(buf_.data(), buf_.size() - n);
    return {start, n};
  }

 private:
  std::vector<std::byte> buf_;
};

[[noreturn]] void violated(const std::string& what) {
  std::fprintf(stderr, "fuzz_safetensors: invariant violated: %s\n", what.c_str());
  std::abort();
}

// What parse() promises about an accepted header; returns the broken promise, or "".
std::string check_accepted(const st::Header& h, uint64_t file_size) {
  if (h.header_size > st::kMaxHeaderSize || h.data_start() > file_size) return "header size out of range";
  uint64_t at = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != at || t.end < t.begin)
      return fmt::format("tensor {} does not follow the previous one", st::quote_name(t.name));
    unsigned __int128 bits = st::dtype_bits(t.dtype);
    for (uint64_t d : t.shape) {
      bits *= d;
      if (bits >> 64) return fmt::format("tensor {} overflows", st::quote_name(t.name));
    }
    if (bits % 8 || bits / 8 != t.end - t.begin)
      return fmt::format("tensor {} has the wrong size", st::quote_name(t.name));
    if (!st::parse_dtype(st::dtype_string(t.dtype))) return "unknown dtype";
    at = t.end;
  }
  if (h.data_start() + at != file_size) return "tensors do not end at the end of the file";
  return "";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Arena arena;
  if (size < 4) return -1;  // not an input of this format: keep it out of the corpus
  uint32_t tail = 0;
  std::memcpy(&tail, data, 4);
  const auto file = arena.place({data + 4, size - 4}, tail & kTailMask);
  try {
    const st::Header h = st::parse(file, "fuzz");
    if (std::string bug = check_accepted(h, file.size()); !bug.empty()) violated(bug);
    // bitsandbytes' JSON quant states (models/bnb_state.h) in the data the header describes: parsed
    // or refused with one line naming the input, like the header itself.
    for (const auto& t : h.tensors)
      if (t.name.find(".quant_state.") != std::string::npos && t.dtype == st::StDType::U8) try {
          rf::models::parse_bnb_quant_state(file.subspan(h.data_start() + t.begin, t.end - t.begin), "fuzz", t.name);
        } catch (const std::runtime_error& e) {
          const std::string_view msg = e.what();
          if (!msg.starts_with("[bnb] fuzz: "))
            violated(fmt::format("quant state message does not name the input: {}", msg));
          if (msg.find('\n') != std::string_view::npos) violated(fmt::format("message spans lines: {}", msg));
        }
  } catch (const std::runtime_error& e) {
    const std::string_view msg = e.what();
    if (!msg.starts_with("[safetensors] fuzz: ")) violated(fmt::format("message does not name the input: {}", msg));
    if (msg.find('\n') != std::string_view::npos) violated(fmt::format("message spans lines: {}", msg));
  } catch (const std::exception& e) {
    violated(fmt::format("not a std::runtime_error: {}", e.what()));
  }
  return 0;
}
