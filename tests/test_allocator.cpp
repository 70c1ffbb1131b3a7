// The CPU caching allocator: steady-state training steps are served from the cache, memory is
// accounted for, and empty_cache gives cached blocks back.
#include <cstdint>

#include "backends/cpu/cpu_backend.h"
#include "tests/test_util.h"

namespace rf::test {
namespace {

// One forward/backward of a small MLP: the same allocation pattern every call.
double train_like_step(const Tensor& x, const Tensor& w1, const Tensor& w2) {
  Tensor h = gelu(matmul(x, w1));
  Tensor loss = mean(square(matmul(h, w2)));
  backward(loss);
  return loss.item();
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("allocator: a repeated step after warm-up hits the cache only") {
    manual_seed(1);
    Tensor x = randn({64, 32});
    Tensor w1 = randn({32, 48}).set_requires_grad();
    Tensor w2 = randn({48, 8}).set_requires_grad();
    for (int i = 0; i < 3; ++i) {  // warm-up fills the size buckets
      train_like_step(x, w1, w2);
      w1.zero_grad();
      w2.zero_grad();
    }
    cpu::AllocatorStats s0 = cpu::allocator_stats();
    for (int i = 0; i < 5; ++i) {
      train_like_step(x, w1, w2);
      w1.zero_grad();
      w2.zero_grad();
    }
    cpu::AllocatorStats s1 = cpu::allocator_stats();
    uint64_t allocs = s1.allocs - s0.allocs;
    uint64_t hits = s1.cache_hits - s0.cache_hits;
    CHECK(allocs > 20);  // a forward plus backward allocates many outputs
    CHECK(hits == allocs);
    CHECK(s1.system_allocs == s0.system_allocs);
    CHECK(s1.bytes_in_use == s0.bytes_in_use);  // nothing leaked between identical steps
    CHECK(s1.peak_bytes_in_use >= s1.bytes_in_use);
  }

  TEST_CASE("allocator: bytes in use follow tensor lifetimes, empty_cache returns cached bytes") {
    cpu::AllocatorStats s0 = cpu::allocator_stats();
    size_t held = 0;
    {
      Tensor a = empty({1 << 16}, DType::F32);  // 256 KiB
      Tensor b = empty({1000}, DType::F64);
      cpu::AllocatorStats s1 = cpu::allocator_stats();
      held = s1.bytes_in_use - s0.bytes_in_use;
      CHECK(held >= (size_t(1) << 18) + 8000);
      CHECK(s1.allocs - s0.allocs == 2);
      // 64-byte alignment, as promised for vectorised kernels.
      CHECK(reinterpret_cast<uintptr_t>(cpu::data<float>(a)) % 64 == 0);
      CHECK(reinterpret_cast<uintptr_t>(cpu::data<double>(b)) % 64 == 0);
    }
    cpu::AllocatorStats s2 = cpu::allocator_stats();
    CHECK(s2.bytes_in_use == s0.bytes_in_use);
    CHECK(s2.frees - s0.frees == 2);
    CHECK(s2.bytes_cached >= held);  // freed blocks go to the cache, not to the system

    // A block of the same size comes straight back from the cache.
    {
      Tensor again = empty({1 << 16}, DType::F32);
      cpu::AllocatorStats s3 = cpu::allocator_stats();
      CHECK(s3.cache_hits - s2.cache_hits == 1);
      CHECK(s3.system_allocs == s2.system_allocs);
    }

    cpu::allocator_empty_cache();
    cpu::AllocatorStats s4 = cpu::allocator_stats();
    CHECK(s4.bytes_cached == 0);
    CHECK(s4.bytes_in_use == s0.bytes_in_use);
    Tensor fresh = empty({1 << 16}, DType::F32);
    CHECK(cpu::allocator_stats().system_allocs == s4.system_allocs + 1);  // the cache really was emptied
  }
}

}  // namespace rf::test
