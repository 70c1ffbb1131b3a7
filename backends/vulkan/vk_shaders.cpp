#include "backends/vulkan/vk_shaders.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>
#include <string>

namespace rf::vk::shaders {

namespace {
const Entry* lookup(std::string_view name) {
  const Entry* end = kTable + kTableSize;
  const Entry* it = std::lower_bound(kTable, end, name,
                                     [](const Entry& e, std::string_view n) { return std::string_view(e.name) < n; });
  return it != end && it->name == name ? it : nullptr;
}

#define RF_SHADER_NAME(e, s) #s,
constexpr const char* kUnaryNames[] = {RF_UNARY_OPS(RF_SHADER_NAME)};
constexpr const char* kBinaryNames[] = {RF_BINARY_OPS(RF_SHADER_NAME)};
#undef RF_SHADER_NAME
static_assert(std::size(kUnaryNames) == size_t(UnaryOp::Count) && std::size(kBinaryNames) == size_t(BinaryOp::Count));

}  // namespace

std::span<const uint32_t> find(std::string_view name) {
  const Entry* e = lookup(name);
  if (!e) throw std::logic_error(fmt::format("[vulkan] shader variant '{}' was not built", name));
  return {e->words, e->count};
}
bool has(std::string_view name) { return lookup(name) != nullptr; }

std::span<const uint32_t> fill() { return find("fill"); }
std::span<const uint32_t> matmul(bool vec4) { return find(vec4 ? "matmul_vec4" : "matmul"); }

bool matmul_vec4_ok(const MatmulPush& p) {
  auto q = [](uint32_t v) { return v % 4 == 0; };
  return p.sak == 1 && p.sbn == 1 && q(p.a_off) && q(p.b_off) && q(p.sam) && q(p.sbk) && q(p.K) && q(p.N) &&
         q(p.a_batch) && q(p.b_batch);
}

std::string_view unary_name(UnaryOp op) {
  if (op >= UnaryOp::Count) throw std::invalid_argument("[vulkan] invalid unary op");
  static std::array<std::string, size_t(UnaryOp::Count)> names = [] {
    std::array<std::string, size_t(UnaryOp::Count)> n;
    for (size_t i = 0; i < n.size(); ++i) n[i] = std::string("unary_") + kUnaryNames[i];
    return n;
  }();
  return names[size_t(op)];
}
std::string_view binary_name(BinaryOp op) {
  if (op >= BinaryOp::Count) throw std::invalid_argument("[vulkan] invalid binary op");
  static std::array<std::string, size_t(BinaryOp::Count)> names = [] {
    std::array<std::string, size_t(BinaryOp::Count)> n;
    for (size_t i = 0; i < n.size(); ++i) n[i] = std::string("binary_") + kBinaryNames[i];
    return n;
  }();
  return names[size_t(op)];
}
std::span<const uint32_t> unary(UnaryOp op) { return find(unary_name(op)); }
std::span<const uint32_t> binary(BinaryOp op) { return find(binary_name(op)); }

}  // namespace rf::vk::shaders
