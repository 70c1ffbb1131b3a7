// oneDNN f32 GEMMs (backends/cpu/cpu_dnnl.cpp) against the OpenBLAS path and an f64 reference, and
// the backends' bench hooks (ceilings).
#include <doctest/doctest.h>

#include "backends/cpu/cpu_dnnl.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "tests/test_util.h"

using namespace rf;
using rf::test::allclose;

namespace {

// Restores the process-wide provider even when a CHECK throws.
struct ProviderScope {
  ~ProviderScope() { cpu::set_matmul_provider(cpu::MatmulProvider::Auto); }
};

Tensor with(cpu::MatmulProvider p, const Tensor& a, const Tensor& b) {
  cpu::set_matmul_provider(p);
  return matmul(a, b);
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("oneDNN f32 matmul matches OpenBLAS and f64 for plain, transposed, strided and batched operands") {
    if (!cpu::dnnl_available()) {
      MESSAGE("skipped: built without oneDNN (install libdnnl-dev and reconfigure; meson option dnnl)");
      return;
    }
    ProviderScope scope;
    NoGradGuard no_grad;
    manual_seed(7);
    // Plain layouts get oneDNN's optimised brgemm kernel, not its reference one (which would fall back).
    CHECK(cpu::dnnl_impl_name(cpu::GemmType::F32, false, false, 96, 112, 80, 80, 112, 112).rfind("ref", 0) != 0);
    CHECK(cpu::dnnl_impl_name(cpu::GemmType::F32, true, true, 96, 112, 80, 96, 80, 112).rfind("ref", 0) != 0);
    struct Case {
      const char* name;
      Tensor a, b;
    };
    const Case cases[] = {
        {"plain (96,80)@(80,112)", rand({96, 80}, -1, 1), rand({80, 112}, -1, 1)},
        {"a^T", rand({80, 96}, -1, 1).t(), rand({80, 112}, -1, 1)},
        {"b^T (dX = dY W)", rand({96, 80}, -1, 1), rand({112, 80}, -1, 1).t()},
        {"a^T @ b^T", rand({80, 96}, -1, 1).t(), rand({112, 80}, -1, 1).t()},
        {"strided rows (ld > cols)", narrow(rand({96, 200}, -1, 1), 1, 7, 80),
         narrow(rand({80, 300}, -1, 1), 1, 5, 112)},
        {"batched-broadcast (3,1,64,80)@(4,80,64)", rand({3, 1, 64, 80}, -1, 1), rand({4, 80, 64}, -1, 1)},
        {"batched transposed a, shared b", transpose(rand({5, 80, 64}, -1, 1), -2, -1), rand({80, 96}, -1, 1)},
        {"single row (1,300)@(300,200)", rand({1, 300}, -1, 1), rand({300, 200}, -1, 1)},
        {"large, split over threads (512,256)@(256,384)", rand({512, 256}, -1, 1), rand({256, 384}, -1, 1)},
    };
    for (const Case& c : cases) {
      CAPTURE(c.name);
      Tensor blas = with(cpu::MatmulProvider::OpenBlas, c.a, c.b);
      Tensor dnnl = with(cpu::MatmulProvider::Dnnl, c.a, c.b);
      Tensor ref = matmul(c.a.to(DType::F64), c.b.to(DType::F64));
      CHECK(allclose(dnnl, blas, 1e-4, 1e-4));
      CHECK(allclose(dnnl, ref, 1e-4, 1e-4));
    }
  }

  TEST_CASE("oneDNN f32 matmul applies alpha and beta like sgemm") {
    if (!cpu::dnnl_available()) {
      MESSAGE("skipped: built without oneDNN (install libdnnl-dev and reconfigure; meson option dnnl)");
      return;
    }
    ProviderScope scope;
    NoGradGuard no_grad;
    manual_seed(8);
    Tensor a = rand({64, 96}, -1, 1), b = rand({128, 96}, -1, 1).t(), c0 = rand({64, 128}, -1, 1);
    Tensor want = c0.to(DType::F64) * 0.5 + matmul(a.to(DType::F64), b.to(DType::F64)) * 0.25;
    for (auto p : {cpu::MatmulProvider::OpenBlas, cpu::MatmulProvider::Dnnl}) {
      cpu::set_matmul_provider(p);
      Tensor out = c0.clone();
      backend_for(Device{}).matmul(a, b, out, 0.25f, 0.5f);
      CHECK(allclose(out, want, 1e-4, 1e-4));
    }
  }

  TEST_CASE("cpu backend options and bench hooks: matmul_provider through set_option, ceilings on the same buffers") {
    Backend& be = backend_for(Device{});
    struct Restore {  // the process-wide provider, even when a CHECK throws
      ~Restore() { cpu::set_matmul_provider(cpu::MatmulProvider::Auto); }
    } restore;
    be.set_option("matmul_provider", "openblas");
    CHECK(cpu::matmul_provider() == cpu::MatmulProvider::OpenBlas);
    be.set_option("matmul_provider", "auto");
    CHECK(cpu::matmul_provider() == cpu::MatmulProvider::Auto);
    CHECK_THROWS_WITH_AS(be.set_option("matmul_provider", "mkl"), doctest::Contains("[cpu] matmul_provider 'mkl'"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(be.set_option("threads", "4"), doctest::Contains("[cpu] unknown option 'threads'"),
                         std::invalid_argument);
    // The f32 ceiling (cblas_sgemm) writes the same product the engine computes.
    manual_seed(3);
    Tensor a = rand({48, 64}, -1, 1), b = rand({64, 40}, -1, 1), out = zeros({48, 40});
    const Backend::Ceiling c = be.matmul_ceiling(a, b, out);
    CHECK(c.name == "cblas_sgemm");
    c.run();
    CHECK(rf::test::allclose(out, matmul(a.to(DType::F64), b.to(DType::F64)), 1e-5, 1e-5));
    Tensor dst = zeros({48, 64});
    be.copy_ceiling(a, dst, false).run();
    CHECK(rf::test::allclose(dst, a, 0, 0));
    CHECK(be.memory_stats().peak_bytes_in_use >= be.memory_stats().bytes_in_use);
    CHECK(be.memory_stats().bytes_in_use > 0);
  }

  TEST_CASE("cpu read_ceiling: reads every byte over the backend's threads and leaves src unchanged") {
    Backend& be = backend_for(Device{});
    manual_seed(5);
    // 1001 floats: 500 words for the parallel loop and a 4-byte tail.
    for (const Tensor& src : {rand({1001}, -1, 1), rand({40, 64}, -1, 1), rand({300000}, -1, 1)}) {
      const std::vector<float> before = src.to_vector<float>();
      const Backend::Ceiling c = be.read_ceiling(src);
      CHECK(c.name.rfind("sum_x", 0) == 0);
      c.run();
      c.run();
      CHECK(src.to_vector<float>() == before);
    }
    Tensor base = zeros({9});
    CHECK_THROWS_WITH_AS(be.read_ceiling(base.narrow(0, 1, 8)), doctest::Contains("8-byte boundary"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(be.read_ceiling(rand({4, 6}).t()), doctest::Contains("contiguous"), std::invalid_argument);
  }

  TEST_CASE("copy_ceiling on every backend: dst holds src's bytes after synchronize, offsets respected") {
    rf::test::for_each_backend([](Device d) {
      NoGradGuard no_grad;
      Backend& be = backend_for(d);
      manual_seed(11);
      Tensor big = rand({1003}, -1, 1, DType::F32, d), out = zeros({1005}, DType::F32, d);
      Tensor src = big.narrow(0, 3, 1000), dst = out.narrow(0, 2, 1000);  // contiguous views at offsets
      const Backend::Ceiling c = be.copy_ceiling(src, dst, false);
      c.run();
      be.synchronize();
      const std::vector<float> s = src.to_vector<float>(), o = out.to_vector<float>();
      CHECK(std::vector<float>(o.begin() + 2, o.begin() + 1002) == s);
      CHECK(o[0] == 0.0f);
      CHECK(o[1] == 0.0f);
      CHECK(o[1002] == 0.0f);
      CHECK(o[1004] == 0.0f);
      // Recorded twice more after src changed: the stream orders the copies after the fill.
      big.fill_(2.5);
      c.run();
      c.run();
      be.synchronize();
      CHECK(dst.to_vector<float>() == std::vector<float>(1000, 2.5f));
      CHECK_THROWS_AS(be.copy_ceiling(src, out, false), std::invalid_argument);  // sizes differ
      if (d.type != DeviceType::CPU)
        CHECK_THROWS_WITH_AS(be.read_ceiling(src), doctest::Contains("no read ceiling"), std::invalid_argument);
    });
  }
}
