// Deterministic mutation fuzzer for rf::safetensors::parse (built with ASan + UBSan; no libFuzzer).
// Usage: fuzz_safetensors [--iterations N] [--seed S] [files...]
// Seeds are valid images built here plus the given files; each input is one seed with a few stacked
// mutations. Every rejection must be a one-line std::runtime_error naming the input, and every
// accepted header must describe tensors that tile the data section exactly.
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/safetensors.h"

#if defined(__SANITIZE_ADDRESS__) && __has_include(<sanitizer/asan_interface.h>)
#include <sanitizer/asan_interface.h>
#define RF_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define RF_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define RF_POISON(p, n) ((void)(p), (void)(n))
#define RF_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace {

namespace st = rf::safetensors;
using Bytes = std::vector<std::byte>;
using Rng = std::mt19937_64;

// An input is a (mutated) head plus `tail` data bytes. parse() never reads tensor data, so a large
// checkpoint's data needs no copy per input: only its size matters.
struct Input {
  Bytes head;
  uint64_t tail = 0;
  uint64_t size() const { return head.size() + tail; }
};

// Places each input at the very end of one allocation and poisons the bytes before it, so ASan
// still sees a read past either end without a fresh multi-megabyte allocation per input.
class Arena {
 public:
  ~Arena() { RF_UNPOISON(buf_.data(), buf_.size()); }
  std::span<const std::byte> place(const Input& in) {
    const size_t n = size_t(in.size());
    if (n > buf_.size()) {
      RF_UNPOISON(buf_.data(), buf_.size());
      buf_ = Bytes(n + n / 2);
    }
    std::byte* start = buf_.data() + buf_.size() - n;
    RF_POISON(buf_.data(), buf_.size() - n);
    RF_UNPOISON(start, n);
    if (!in.head.empty()) std::memcpy(start, in.head.data(), in.head.size());  // the tail keeps old bytes
    return {start, n};
  }

 private:
  Bytes buf_;
};

Input image(std::string header, size_t data_bytes) {
  header.append((8 - header.size() % 8) % 8, ' ');
  Bytes b(8 + header.size() + data_bytes, std::byte{0x3f});
  uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return {std::move(b), 0};
}

std::vector<Input> builtin_seeds() {
  return {
      image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
      image(R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})", 16),
      image(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}})", 6),
      image(R"({"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"r":{"dtype":"BOOL","shape":[2,1],"data_offsets":[2,4]}})", 4),
      image(R"({"f64":{"dtype":"F64","shape":[1,2],"data_offsets":[0,16]},"c":{"dtype":"C64","shape":[1],"data_offsets":[16,24]},)"
            R"("u":{"dtype":"U32","shape":[2],"data_offsets":[24,32]},"h":{"dtype":"I16","shape":[3],"data_offsets":[32,38]},)"
            R"("s":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[38,41]},"p":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[41,45]},)"
            R"("z":{"dtype":"U8","shape":[0],"data_offsets":[45,45]}})", 45),
      image(" \n\t{\"__metadata__\":{\"k\\u00e9\":\"v\\n\",\"\":\"\"},\"a\\\"b\":{\"data_offsets\":[0,4],\"shape\":[],\"dtype\":\"I32\"}}", 4),
      image("{}", 0),
  };
}

// JSON fragments spliced into headers: structure, every field, hostile numbers and names.
constexpr std::string_view kTokens[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\n", "\\u001b", "\\/", " ", "\n",
    "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"F32\"", "\"F4\"", "\"F6_E2M3\"", "\"BOOL\"",
    "\"C64\"", "\"U64\"", "\"f32\"", "0", "1", "-1", "-0", "8", "1.0", "1e3", "1e308", "4294967296",
    "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616", "4611686018427387904",
    "99999999999999999999999", "null", "true", "false", "[]", "{}", "[0,0]", "[0,18446744073709551615]",
    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},",
    "\"__metadata__\":{\"a\":\"b\"},", "\"__metadata__\":{\"a\":1},", "\"x\":1,", "\"dtype\":\"F32\",",
    "\"shape\":[2,9223372036854775807],", "\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82",
};
constexpr uint8_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, '{', '}', '[', ']', '"', ',', ':', '\\', ' ', '-', '.', 'e', '0', '1', '9'};
constexpr uint64_t kLengths[] = {0, 1, 7, 8, st::kMaxHeaderSize - 1, st::kMaxHeaderSize, st::kMaxHeaderSize + 1,
                                 uint64_t(1) << 32, uint64_t(1) << 63, UINT64_MAX - 7, UINT64_MAX};

uint64_t announced(const Bytes& b) {
  uint64_t n = 0;
  if (b.size() >= 8) std::memcpy(&n, b.data(), 8);
  return n;
}

// Most mutations land in the header, where the parser looks; the rest anywhere.
size_t pick(const Bytes& b, Rng& g) {
  if (b.empty()) return 0;
  uint64_t end = std::min<uint64_t>(b.size(), 8 + std::min<uint64_t>(announced(b), b.size()));
  return g() % 8 ? size_t(g() % end) : size_t(g() % b.size());
}

void insert(Bytes& b, size_t at, std::string_view s) {
  auto* p = reinterpret_cast<const std::byte*>(s.data());
  b.insert(b.begin() + std::ptrdiff_t(std::min(at, b.size())), p, p + s.size());
}

void mutate(Input& in, const std::vector<Input>& seeds, Rng& g) {
  Bytes& b = in.head;
  const int ops = 1 + int(g() % 5);
  for (int k = 0; k < ops; ++k) {
    const size_t at = pick(b, g);
    switch (g() % 11) {
      case 0:  // bit flip
        if (!b.empty()) b[at] ^= std::byte(1u << (g() % 8));
        break;
      case 1:  // interesting byte
        if (!b.empty()) b[at] = std::byte(kInteresting[g() % std::size(kInteresting)]);
        break;
      case 2:  // splice a JSON token
        insert(b, at, kTokens[g() % std::size(kTokens)]);
        break;
      case 3:  // delete a range
        if (!b.empty()) b.erase(b.begin() + std::ptrdiff_t(at), b.begin() + std::ptrdiff_t(std::min(b.size(), at + 1 + g() % 24)));
        break;
      case 4:  // truncate or extend (the data tail, or the head itself)
        if (in.tail > 0 && g() % 2) in.tail = g() % (2 * in.tail + 1);
        else if (g() % 2) b.resize(size_t(g() % (b.size() + 1)));
        else b.resize(b.size() + 1 + g() % 64, std::byte(g() % 2 ? 0 : g()));
        break;
      case 5:  // rewrite the length prefix: near the truth or a hostile constant
        if (b.size() >= 8) {
          uint64_t n = g() % 2 ? announced(b) + uint64_t(int64_t(g() % 33) - 16) : kLengths[g() % std::size(kLengths)];
          std::memcpy(b.data(), &n, 8);
        }
        break;
      case 6:  // replace the number at or after `at` with another one
        for (size_t i = std::max<size_t>(at, 8); i < b.size(); ++i) {
          if (char(b[i]) < '0' || char(b[i]) > '9') continue;
          size_t j = i;
          while (j < b.size() && char(b[j]) >= '0' && char(b[j]) <= '9') ++j;
          b.erase(b.begin() + std::ptrdiff_t(i), b.begin() + std::ptrdiff_t(j));
          static constexpr std::string_view nums[] = {"0", "1", "2", "3", "4", "7", "8", "16", "-4", "4294967295",
                                                      "18446744073709551615", "18446744073709551616", "2.5", "1e2"};
          insert(b, i, nums[g() % std::size(nums)]);
          break;
        }
        break;
      case 7:  // duplicate a slice of itself (repeats keys, entries, brackets)
        if (b.size() > 2) {
          size_t len = std::min<size_t>(b.size() - at, 1 + g() % 64);
          Bytes s(b.begin() + std::ptrdiff_t(at), b.begin() + std::ptrdiff_t(at + len));
          b.insert(b.begin() + std::ptrdiff_t(pick(b, g)), s.begin(), s.end());
        }
        break;
      case 8: {  // crossover: a slice of another seed's header
        const Bytes& o = seeds[g() % seeds.size()].head;
        if (o.size() > 8) {
          size_t from = 8 + g() % (std::min<uint64_t>(o.size(), 8 + std::min<uint64_t>(announced(o), o.size())) - 8 + 1);
          size_t len = std::min<size_t>(o.size() - from, 1 + g() % 96);
          b.insert(b.begin() + std::ptrdiff_t(std::min(at, b.size())), o.begin() + std::ptrdiff_t(from),
                   o.begin() + std::ptrdiff_t(from + len));
        }
        break;
      }
      case 9:  // make the prefix end the header just after the last '}', so validation runs deeper
        for (size_t i = b.size(); i-- > 8;)
          if (char(b[i]) == '}') {
            uint64_t n = i + 1 - 8;
            std::memcpy(b.data(), &n, 8);
            break;
          }
        break;
      default:  // swap two bytes
        if (b.size() > 1) std::swap(b[at], b[pick(b, g)]);
    }
  }
}

// What parse() promises about an accepted header; returns the broken promise, or "".
std::string check_accepted(const st::Header& h, uint64_t file_size) {
  if (h.header_size > st::kMaxHeaderSize || h.data_start() > file_size) return "header size out of range";
  uint64_t at = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != at || t.end < t.begin) return fmt::format("tensor {} does not follow the previous one", st::quote_name(t.name));
    unsigned __int128 bits = st::dtype_bits(t.dtype);
    for (uint64_t d : t.shape) {
      bits *= d;
      if (bits >> 64) return fmt::format("tensor {} overflows", st::quote_name(t.name));
    }
    if (bits % 8 || bits / 8 != t.end - t.begin) return fmt::format("tensor {} has the wrong size", st::quote_name(t.name));
    if (!st::parse_dtype(st::dtype_string(t.dtype))) return "unknown dtype";
    at = t.end;
  }
  if (h.data_start() + at != file_size) return "tensors do not end at the end of the file";
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 100000, seed = 1;
  std::vector<Input> seeds = builtin_seeds();
  for (const Input& s : seeds) {  // a seed that does not parse would test nothing
    try {
      st::parse(s.head, "seed");
    } catch (const std::exception& e) {
      fmt::print(stderr, "fuzz_safetensors: built-in seed rejected: {}\n", e.what());
      return 2;
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    try {
      if (a == "--iterations" && i + 1 < argc) { iterations = std::stoull(argv[++i]); continue; }
      if (a == "--seed" && i + 1 < argc) { seed = std::stoull(argv[++i]); continue; }
    } catch (const std::exception&) {
      fmt::print(stderr, "fuzz_safetensors: {} needs a number\n", a);
      return 2;
    }
    std::ifstream in(a, std::ios::binary);
    if (!in) {
      fmt::print(stderr, "fuzz_safetensors: cannot read {}\n", a);
      return 2;
    }
    std::vector<char> c{std::istreambuf_iterator<char>(in), {}};
    Input s;
    s.head.resize(c.size());
    if (!c.empty()) std::memcpy(s.head.data(), c.data(), c.size());
    // Keep the header and a few data bytes; the rest of the data becomes the tail.
    const uint64_t keep = std::min<uint64_t>(s.head.size(), 8 + std::min<uint64_t>(announced(s.head), s.head.size()) + 64);
    s.tail = s.head.size() - keep;
    s.head.resize(size_t(keep));
    seeds.push_back(std::move(s));
  }

  Rng g(seed);
  Arena arena;
  uint64_t accepted = 0, rejected = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t it = 0; it < iterations; ++it) {
    Input input = seeds[g() % seeds.size()];
    mutate(input, seeds, g);
    const auto b = arena.place(input);
    std::string bug;
    try {
      auto h = st::parse(b, "fuzz");
      ++accepted;
      bug = check_accepted(h, b.size());
    } catch (const std::exception& e) {
      ++rejected;
      std::string_view msg = e.what();
      if (!dynamic_cast<const std::runtime_error*>(&e)) bug = fmt::format("not a std::runtime_error: {}", msg);
      else if (!msg.starts_with("[safetensors] fuzz: ")) bug = fmt::format("message does not name the input: {}", msg);
      else if (msg.find('\n') != std::string_view::npos) bug = fmt::format("message spans lines: {}", msg);
    }
    if (!bug.empty()) {
      std::ofstream("fuzz_safetensors_failure.bin", std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
      fmt::print(stderr, "fuzz_safetensors: iteration {} (seed {}): {}; input saved to fuzz_safetensors_failure.bin\n", it, seed, bug);
      return 1;
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("fuzz_safetensors: {} inputs, {} accepted, {} rejected, {:.1f} seconds\n", iterations, accepted, rejected, s);
  return 0;
}
