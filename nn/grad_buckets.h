#pragma once
// Data-parallel gradient sums (rf::dist): the trainable tensors' gradients are summed across ranks in
// a few fused f32 buckets, staged through host memory (a Vulkan gradient is downloaded, summed and
// uploaded). Buckets follow the reverse parameter order, the order in which backward completes them,
// and are launched strictly in bucket order (every rank issues the same collectives in the same
// order), each as soon as all its gradients are complete (LeafGradHook), so the sums overlap the
// rest of the backward; finish() launches the remainder. Each bucket also sums one presence count
// per tensor, so a tensor that no rank computed a gradient for keeps none (the optimizer skips it).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/tensor.h"

namespace rf::nn {

struct GradBucketOptions {
  size_t bucket_bytes = size_t(4) << 20;  // f32 gradient bytes per bucket (a tensor never splits)
  bool overlap = true;                    // false: every bucket waits for finish()
};

class GradBuckets {
 public:
  explicit GradBuckets(std::vector<Tensor> params, GradBucketOptions o = {});
  // Watches the backward that completes the gradients (the last micro-batch): buckets start as
  // their gradients complete. Keep the guard alive for that backward only.
  std::unique_ptr<LeafGradHookGuard> watch();
  // Launches the buckets not yet started, waits for all, and writes each sum back into .grad.
  void finish();
  size_t bucket_count() const { return buckets_.size(); }
  int64_t launched_in_backward() const { return early_; }  // buckets of the last finish() started early

 private:
  struct Bucket {
    std::vector<size_t> members;  // indices into params_
    std::vector<size_t> offsets;  // element offset of each member in buf
    size_t numel = 0;             // gradient elements; the presence counts follow them in buf
    std::vector<float> buf;
    dist::Request req;
    bool launched = false;
    size_t pending = 0;  // members whose gradient is not yet complete
  };
  void on_leaf(const TensorImpl& leaf);
  void launch_in_order();
  void launch(Bucket& b);
  void reset();

  std::vector<Tensor> params_;
  GradBucketOptions o_;
  std::unordered_map<const TensorImpl*, size_t> index_;
  std::vector<size_t> bucket_of_;
  std::vector<bool> done_;
  std::vector<Bucket> buckets_;
  size_t next_ = 0;  // first bucket not launched
  int64_t early_ = 0;
  bool watching_ = false;
};

}  // namespace rf::nn
