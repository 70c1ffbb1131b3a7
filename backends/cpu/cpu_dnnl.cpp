// oneDNN f32 matmul primitives, cached by (shape, strides, alpha, beta).
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
bool dnnl_sgemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
                int64_t) {
  return false;
}
std::string dnnl_impl_name(bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) { return ""; }

#else

namespace {

using dnnl::memory;
using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float>;

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

memory::desc mat_desc(int64_t rows, int64_t cols, bool trans, int64_t ld) {
  return memory::desc({rows, cols}, memory::data_type::f32, trans ? memory::dims{1, ld} : memory::dims{ld, 1});
}

// Entries are never erased, so a reference stays valid after the lock is released.
const Entry& lookup(const Key& key) {
  static std::mutex mu;
  static std::map<Key, Entry> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto [ta, tb, M, N, K, lda, ldb, ldc, alpha, beta] = key;
  Entry e;
  e.a = mat_desc(M, K, ta, lda);
  e.b = mat_desc(K, N, tb, ldb);
  e.c = mat_desc(M, N, false, ldc);
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

bool dnnl_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const Entry& e = lookup({ta, tb, M, N, K, lda, ldb, ldc, alpha, beta});
  if (!e.prim) return false;
  one_omp_thread();
  thread_local dnnl::stream stream(cpu_engine());
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < e.scratch) scratch.resize(e.scratch);
  auto& eng = cpu_engine();
  memory ma(e.a, eng, const_cast<float*>(A)), mb(e.b, eng, const_cast<float*>(B)), mc(e.c, eng, C);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  if (e.scratch > 0)
    args.emplace(DNNL_ARG_SCRATCHPAD, memory({{int64_t(e.scratch)}, memory::data_type::u8, memory::format_tag::a}, eng,
                                             scratch.data()));
  e.prim->execute(stream, args);
  stream.wait();
  return true;
}

std::string dnnl_impl_name(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  return lookup({ta, tb, M, N, K, lda, ldb, ldc, 1.0f, 0.0f}).impl;
}

#endif

}  // namespace rf::cpu
