#pragma once
// Threading policy between OpenBLAS and oneTBB (see cpu_matmul.cpp): OpenBLAS fans out only when
// called from the front-end thread; inside TBB tasks it must run single-threaded.
#include <cblas.h>

namespace rf::cpu {

// Pins OpenBLAS to one thread for a scope (batched small GEMMs under tbb::parallel_for).
class BlasSingleThread {
 public:
  BlasSingleThread() : prev_(openblas_get_num_threads()) {
    if (prev_ != 1) openblas_set_num_threads(1);
  }
  ~BlasSingleThread() {
    if (prev_ != 1) openblas_set_num_threads(prev_);
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int prev_;
};

}  // namespace rf::cpu
