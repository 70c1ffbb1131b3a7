// Deterministic mutation fuzzer for the safetensors header parser (built with ASan + UBSan).
// Usage: fuzz_safetensors [--iterations N] [--seed S] [files...]
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/safetensors.h"

using Bytes = std::vector<std::byte>;

static Bytes image(const std::string& header, size_t data) {
  Bytes b(8 + header.size() + data, std::byte{0x3f});
  uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

static void mutate(Bytes& b, std::mt19937_64& g) {
  static const char* tokens[] = {"{", "}", "[", "]", ",", ":", "\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F32\"",
                                 "\"F4\"", "\"BOOL\"", "-1", "0", "18446744073709551615", "18446744073709551616", "1e300",
                                 "\"__metadata__\"", "null", "true", "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",
                                 "\xff", "\xc3", " ", "99999999999"};
  static const uint8_t interesting[] = {0, 0xff, '{', '}', '"', ',', ':', '0', '9', '-', '[', ']', 0x80, 0x7f};
  const int ops = 1 + int(g() % 4);
  for (int k = 0; k < ops; ++k) {
    size_t at = b.empty() ? 0 : g() % b.size();
    switch (g() % 8) {
      case 0: if (!b.empty()) b[at] ^= std::byte(1u << (g() % 8)); break;
      case 1: if (!b.empty()) b[at] = std::byte(interesting[g() % sizeof interesting]); break;
      case 2: {  // insert a JSON token
        std::string t = tokens[g() % std::size(tokens)];
        b.insert(b.begin() + std::ptrdiff_t(at), reinterpret_cast<const std::byte*>(t.data()), reinterpret_cast<const std::byte*>(t.data()) + t.size());
        break;
      }
      case 3: if (!b.empty()) b.erase(b.begin() + std::ptrdiff_t(at), b.begin() + std::ptrdiff_t(std::min(b.size(), at + 1 + g() % 16))); break;
      case 4: b.resize(g() % (b.size() + 64)); break;  // truncate or extend
      case 5: if (b.size() >= 8) {                     // rewrite the length prefix
        uint64_t n = g() % 3 ? uint64_t(b.size()) - 8 - g() % 32 : g();
        std::memcpy(b.data(), &n, 8);
      } break;
      case 6: if (b.size() > 8) {  // retarget a digit
        for (size_t i = at; i < b.size(); ++i)
          if (char(b[i]) >= '0' && char(b[i]) <= '9') { b[i] = std::byte('0' + g() % 10); break; }
      } break;
      default: if (b.size() > 2) {  // duplicate a slice
        size_t len = std::min<size_t>(b.size() - at, 1 + g() % 40);
        Bytes s(b.begin() + std::ptrdiff_t(at), b.begin() + std::ptrdiff_t(at + len));
        b.insert(b.begin() + std::ptrdiff_t(g() % b.size()), s.begin(), s.end());
      }
    }
  }
}

int main(int argc, char** argv) {
  uint64_t iterations = 100000, seed = 1;
  std::vector<Bytes> seeds = {
      image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
      image(R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})", 16),
      image(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}})", 6),
      image(R"({"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"r":{"dtype":"BOOL","shape":[2,1],"data_offsets":[2,4]}})", 4),
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) iterations = std::stoull(argv[++i]);
    else if (a == "--seed" && i + 1 < argc) seed = std::stoull(argv[++i]);
    else {
      std::ifstream in(a, std::ios::binary);
      if (!in) { fmt::print(stderr, "fuzz_safetensors: cannot read {}\n", a); return 2; }
      std::vector<char> c{std::istreambuf_iterator<char>(in), {}};
      Bytes b(c.size());
      std::memcpy(b.data(), c.data(), c.size());
      if (b.size() > (1 << 16)) b.resize(1 << 16);  // the header is what matters; keep inputs small
      seeds.push_back(std::move(b));
    }
  }
  std::mt19937_64 g(seed);
  uint64_t accepted = 0, rejected = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t it = 0; it < iterations; ++it) {
    Bytes b = seeds[g() % seeds.size()];
    mutate(b, g);
    try {
      auto h = rf::safetensors::parse(b, "fuzz");
      ++accepted;
      for (const auto& t : h.tensors)  // what parse accepts must be in bounds
        if (8 + h.header_size + t.end > b.size()) { fmt::print(stderr, "accepted an out-of-bounds tensor\n"); return 1; }
    } catch (const std::runtime_error&) {
      ++rejected;
    } catch (const std::invalid_argument&) {
      ++rejected;
    }
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("fuzz_safetensors: {} inputs, {} accepted, {} rejected, {:.1f} seconds\n", iterations, accepted, rejected, s);
  return 0;
}
