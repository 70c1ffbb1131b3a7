#include "nn/grad_buckets.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace rf::nn {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GradBuckets::GradBuckets(std::vector<Tensor> params, GradBucketOptions o) : params_(std::move(params)), o_(o) {
  bucket_of_.resize(params_.size());
  done_.assign(params_.size(), false);
  const size_t cap = std::max<size_t>(o_.bucket_bytes / sizeof(float), 1);
  for (size_t k = params_.size(); k-- > 0;) {  // reverse order: the last layers' gradients complete first
    const size_t n = size_t(params_[k].numel());
    if (buckets_.empty() || (buckets_.back().numel > 0 && buckets_.back().numel + n > cap)) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.members.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += n;
    bucket_of_[k] = buckets_.size() - 1;
    index_[params_[k].impl()] = k;
  }
  reset();
}

void GradBuckets::reset() {
  for (auto& b : buckets_) {
    b.launched = false;
    b.pending = b.members.size();
  }
  std::fill(done_.begin(), done_.end(), false);
  next_ = 0;
}

std::unique_ptr<LeafGradHookGuard> GradBuckets::watch() {
  if (!o_.overlap || !dist::active()) return nullptr;
  watching_ = true;
  early_ = 0;
  return std::make_unique<LeafGradHookGuard>([this](const TensorImpl& leaf) { on_leaf(leaf); });
}

void GradBuckets::on_leaf(const TensorImpl& leaf) {
  auto it = index_.find(&leaf);
  if (it == index_.end() || done_[it->second]) return;  // not a trainable tensor of ours (RoSA's dense probe)
  done_[it->second] = true;
  --buckets_[bucket_of_[it->second]].pending;
  launch_in_order();
}

void GradBuckets::launch_in_order() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
    launch(buckets_[next_++]);
    ++early_;
  }
  // Open MPI's non-blocking collectives advance inside MPI calls: poke the ones in flight.
  for (size_t i = 0; i < next_; ++i) buckets_[i].req.test();
}

void GradBuckets::launch(Bucket& b) {
  const auto t0 = std::chrono::steady_clock::now();
  b.buf.assign(b.numel + b.members.size(), 0.0f);
  for (size_t j = 0; j < b.members.size(); ++j) {
    const Tensor g = params_[b.members[j]].grad();
    if (!g.defined()) continue;
    const std::vector<float> v = g.to_vector<float>();
    std::memcpy(b.buf.data() + b.offsets[j], v.data(), v.size() * sizeof(float));
    b.buf[b.numel + j] = 1.0f;
  }
  dist::add_comm_time(seconds_since(t0));
  b.req = dist::iallreduce_sum(b.buf);
  b.launched = true;
}

void GradBuckets::finish() {
  if (!dist::active()) return;
  if (!watching_) early_ = 0;
  watching_ = false;
  while (next_ < buckets_.size()) launch(buckets_[next_++]);
  for (auto& b : buckets_) {
    b.req.wait();
    const auto t0 = std::chrono::steady_clock::now();
    NoGradGuard ng;
    for (size_t j = 0; j < b.members.size(); ++j) {
      Tensor p = params_[b.members[j]];
      if (b.buf[b.numel + j] == 0.0f) {  // no rank had a gradient
        p.zero_grad();
        continue;
      }
      Tensor g =
          from_data(std::span<const float>(b.buf.data() + b.offsets[j], size_t(p.numel())), p.shape(), p.device());
      p.set_grad(g.dtype() == p.dtype() ? g : g.to(p.dtype()));
    }
    dist::add_comm_time(seconds_since(t0));
  }
  reset();
}

}  // namespace rf::nn
