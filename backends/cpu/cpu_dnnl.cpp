// oneDNN matmul primitives (f32, and bf16/f16 operands with f32 output), cached by (operand type,
// shape, strides, alpha, beta).
//
// Threading: Debian's libdnnl runs on OpenMP (libgomp). The engine never lets that OpenMP pool
// fan out: every primitive is created and executed with the calling thread's OpenMP ICV set to one
// thread, so oneDNN runs its kernel inline on that thread and libgomp never starts a team (no
// spinning OpenMP workers, no oversubscription with oneTBB or OpenBLAS). Parallelism comes from
// the same TBB panel split as the OpenBLAS path (cpu_matmul.cpp, gemm_split): one single-threaded
// oneDNN GEMM per TBB task. omp_set_num_threads only touches the calling thread's ICV in libgomp.
//
// Operands are passed as strided memory descriptors (ld, and a transposed operand as strides
// {1, ld}), so nothing is copied by the engine; brgemm packs B internally.
#include "backends/cpu/cpu_dnnl.h"

#include <atomic>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <cstdlib>
#include <cstring>

#ifdef RF_HAVE_DNNL
#include <fmt/format.h>
#include <omp.h>

#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <vector>
#endif

namespace rf::cpu {

namespace {
// RF_MATMUL_PROVIDER=openblas|dnnl pins the provider for whole-program benchmarks (bench train).
MatmulProvider provider_from_env() {
  const char* v = std::getenv("RF_MATMUL_PROVIDER");
  if (v && std::strcmp(v, "openblas") == 0) return MatmulProvider::OpenBlas;
  if (v && std::strcmp(v, "dnnl") == 0) return MatmulProvider::Dnnl;
  return MatmulProvider::Auto;
}
std::atomic<MatmulProvider> g_provider{provider_from_env()};
}  // namespace

void set_matmul_provider(MatmulProvider p) { g_provider.store(p); }

bool cpu_has_native_bf16() {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__builtin_cpu_supports("avx512f") || __get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, a, b, c, d);
  const bool amx_bf16 = (d >> 22) & 1u;
  __cpuid_count(7, 1, a, b, c, d);
  const bool avx512_bf16 = (a >> 5) & 1u;
  return avx512_bf16 || amx_bf16;
#else
  return false;
#endif
}
MatmulProvider matmul_provider() { return g_provider.load(); }

// Provider rule (Auto), from `rankforge bench matmul --provider openblas|dnnl` on 2 Zen 5 cores with
// OPENBLAS_CORETYPE=Haswell (OpenBLAS restricted to its AVX2 kernels, oneDNN free to use AVX-512):
// oneDNN gives 320-390 GFLOP/s against 182-210 at the GPT-2-small shapes and still wins at 1 MFLOP
// (64x128x64: 124 vs 83); at 0.5 MFLOP (64^3: 35 vs 91) its per-call overhead (memory objects,
// primitive lookup under a mutex) eats the gain, so smaller GEMMs stay on OpenBLAS.
bool matmul_uses_dnnl(int64_t M, int64_t N, int64_t K) {
  if (!dnnl_available()) return false;
  switch (g_provider.load()) {
    case MatmulProvider::OpenBlas: return false;
    case MatmulProvider::Dnnl: return true;
    case MatmulProvider::Auto: break;
  }
  return 2.0 * double(M) * double(N) * double(K) >= 1e6;
}

#ifndef RF_HAVE_DNNL

bool dnnl_available() { return false; }
bool dnnl_gemm(GemmType, bool, bool, int64_t, int64_t, int64_t, float, const void*, int64_t, const void*, int64_t,
               float, float*, int64_t) {
  return false;
}
std::string dnnl_impl_name(GemmType, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) { return ""; }
bool dnnl_gemm_parallel(GemmType, int64_t, int64_t, int64_t, const void*, const void*, float*, int) { return false; }

#else

namespace {

using dnnl::memory;
using Key = std::tuple<GemmType, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float>;

struct Entry {
  std::unique_ptr<dnnl::matmul> prim;  // null: only a reference kernel exists, use OpenBLAS
  memory::desc a, b, c;
  size_t scratch = 0;
  std::string impl;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// Keeps libgomp from starting a team for this call (see the header comment).
void one_omp_thread() {
  if (omp_get_max_threads() != 1) omp_set_num_threads(1);
}

memory::data_type dnnl_type(GemmType t) {
  switch (t) {
    case GemmType::BF16: return memory::data_type::bf16;
    case GemmType::F16: return memory::data_type::f16;
    default: return memory::data_type::f32;
  }
}

memory::desc mat_desc(int64_t rows, int64_t cols, bool trans, int64_t ld, memory::data_type dt) {
  return memory::desc({rows, cols}, dt, trans ? memory::dims{1, ld} : memory::dims{ld, 1});
}

// Entries are never erased, so a reference stays valid after the lock is released.
const Entry& lookup(const Key& key) {
  static std::mutex mu;
  static std::map<Key, Entry> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto [type, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta] = key;
  Entry e;
  e.a = mat_desc(M, K, ta, lda, dnnl_type(type));
  e.b = mat_desc(K, N, tb, ldb, dnnl_type(type));
  e.c = mat_desc(M, N, false, ldc, memory::data_type::f32);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per-thread buffer: concurrent tasks never share one
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  one_omp_thread();
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(e.a, e.b, e.c), attr, cpu_engine());
    e.impl = pd.impl_info_str();
    if (e.impl.rfind("ref", 0) != 0) {
      e.scratch = pd.scratchpad_desc().get_size();
      e.prim = std::make_unique<dnnl::matmul>(pd);
    }
  } catch (const dnnl::error& err) {
    e.impl = fmt::format("unsupported ({})", err.what());
  }
  return cache.emplace(key, std::move(e)).first->second;
}

}  // namespace

bool dnnl_available() { return true; }

bool dnnl_gemm(GemmType type, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
               int64_t lda, const void* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const Entry& e = lookup({type, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta});
  if (!e.prim) return false;
  one_omp_thread();
  thread_local dnnl::stream stream(cpu_engine());
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < e.scratch) scratch.resize(e.scratch);
  auto& eng = cpu_engine();
  memory ma(e.a, eng, const_cast<void*>(A)), mb(e.b, eng, const_cast<void*>(B)), mc(e.c, eng, C);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  if (e.scratch > 0)
    args.emplace(DNNL_ARG_SCRATCHPAD,
                 memory({{int64_t(e.scratch)}, memory::data_type::u8, memory::format_tag::a}, eng, scratch.data()));
  e.prim->execute(stream, args);
  stream.wait();
  return true;
}

std::string dnnl_impl_name(GemmType type, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                           int64_t ldc) {
  return lookup({type, ta, tb, M, N, K, lda, ldb, ldc, 1.0f, 0.0f}).impl;
}

// oneDNN on its own: a fresh primitive for row-major operands, run with an OpenMP team of `threads`,
// the way a program that calls oneDNN directly would. Benchmarks use it as the ceiling; the engine
// never does (its OpenMP stays at one thread per call). Returns false where only a reference kernel exists.
bool dnnl_gemm_parallel(GemmType type, int64_t M, int64_t N, int64_t K, const void* A, const void* B, float* C,
                        int threads) {
  struct Own {
    std::unique_ptr<dnnl::matmul> prim;
    memory::desc a, b, c;
  };
  static std::mutex mu;
  static std::map<std::tuple<GemmType, int64_t, int64_t, int64_t, int>, Own> cache;
  std::unique_lock lock(mu);
  auto [it, fresh] = cache.try_emplace({type, M, N, K, threads});
  Own& o = it->second;
  omp_set_num_threads(threads);
  if (fresh) {
    o.a = mat_desc(M, K, false, K, dnnl_type(type));
    o.b = mat_desc(K, N, false, N, dnnl_type(type));
    o.c = mat_desc(M, N, false, N, memory::data_type::f32);
    try {  // no implementation at all (f16 on a CPU without f16 kernels) reads as "no optimised kernel"
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(o.a, o.b, o.c), cpu_engine());
      if (std::string(pd.impl_info_str()).rfind("ref", 0) != 0) o.prim = std::make_unique<dnnl::matmul>(pd);
    } catch (const dnnl::error&) {}
  }
  bool ok = false;
  if (o.prim) {
    dnnl::stream stream(cpu_engine());
    auto& eng = cpu_engine();
    o.prim->execute(stream, {{DNNL_ARG_SRC, memory(o.a, eng, const_cast<void*>(A))},
                             {DNNL_ARG_WEIGHTS, memory(o.b, eng, const_cast<void*>(B))},
                             {DNNL_ARG_DST, memory(o.c, eng, C)}});
    stream.wait();
    ok = true;
  }
  omp_set_num_threads(1);
  return ok;
}

#endif

}  // namespace rf::cpu
