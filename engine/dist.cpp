#include "engine/dist.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "engine/dist_config.h"
#include "engine/file_io.h"
#include "engine/safetensors.h"
#if RF_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only: no libmpi_cxx symbols
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace rf::dist {

namespace {

using Clock = std::chrono::steady_clock;

struct State {
  bool mpi = false;  // MPI initialised by us and in use
  int rank = 0, size = 1, local = 0;
  double timeout_s = 1800;
  int err_fd = 2;  // the real stderr (silence_other_ranks moves fd 2 away)
  CommStats stats;
};
State& state() {
  static State s;
  return s;
}
std::once_flag g_init;

bool env_set(const char* k) {
  const char* v = std::getenv(k);
  return v && *v;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void write_err(const std::string& line) {
  const std::string s = line + "\n";
  const ssize_t n = ::write(state().err_fd, s.data(), s.size());
  (void)n;
}

#if RF_HAVE_MPI
void finalize_at_exit() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}

void check(int rc, std::string_view what) {
  if (rc == MPI_SUCCESS) return;
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  abort(1, fmt::format("[dist] rank {}: {} failed: {}", state().rank, what, std::string_view(buf, size_t(len))));
}

// Polls req to completion: busy for the first 2 ms (latency), then with 100 µs naps so an
// oversubscribed node lets the peers run; past the deadline every rank is stopped.
void wait_request(MPI_Request& req, std::string_view what, size_t bytes) {
  const auto t0 = Clock::now();
  int done = 0;
  for (int64_t polls = 0;; ++polls) {
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
    if (done) break;
    const double el = seconds_since(t0);
    if (el > state().timeout_s)
      abort(1, fmt::format("[dist] rank {}: {} of {} bytes waited {:.0f} s (RANKFORGE_DIST_TIMEOUT): a rank died or "
                           "hangs; stopping every rank",
                           state().rank, what, bytes, el));
    if (el > 2e-3) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  state().stats.seconds += seconds_since(t0);
}

template <typename T>
void allreduce(std::span<T> v, MPI_Datatype type, MPI_Op op, std::string_view what) {
  init();
  if (!state().mpi || v.empty()) return;
  const auto t0 = Clock::now();
  MPI_Request req;
  check(MPI_Iallreduce(MPI_IN_PLACE, v.data(), int(v.size()), type, op, MPI_COMM_WORLD, &req), what);
  state().stats.seconds += seconds_since(t0);  // the call itself; wait_request adds the wait
  wait_request(req, what, v.size_bytes());
  state().stats.bytes += v.size_bytes();
  ++state().stats.calls;
}
#endif

void do_init() {
  State& s = state();
  if (const char* t = std::getenv("RANKFORGE_DIST_TIMEOUT"); t && *t) {
    char* end = nullptr;
    const double v = std::strtod(t, &end);
    if (end && *end == 0 && v > 0) s.timeout_s = v;
  }
#if RF_HAVE_MPI
  if (!launched()) return;
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      write_err("[dist] MPI_Init failed: this process was started by an MPI launcher but cannot join its job");
      std::exit(1);
    }
    std::atexit(finalize_at_exit);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // errors come back to check()
  MPI_Comm_rank(MPI_COMM_WORLD, &s.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &s.size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, s.rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &s.local);
  MPI_Comm_free(&node);
  s.mpi = true;
#endif
}

}  // namespace

bool built_with_mpi() {
#if RF_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool launched() {
  if (const char* off = std::getenv("RANKFORGE_DIST"); off && std::string_view(off) == "0") return false;
  return env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMI_SIZE") || env_set("PMIX_RANK") || env_set("PMI_RANK");
}

void init() { std::call_once(g_init, do_init); }
int rank() { return init(), state().rank; }
int world_size() { return init(), state().size; }
int local_rank() { return init(), state().local; }

std::string describe() {
#if RF_HAVE_MPI
  char buf[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(buf, &len);
  std::string v(buf, size_t(len));
  if (auto nl = v.find_first_of("\r\n"); nl != std::string::npos) v.resize(nl);
  return v;
#else
  return "not built with MPI (-Dmpi=enabled needs libopenmpi-dev)";
#endif
}

#if RF_HAVE_MPI
void allreduce_sum(std::span<float> v) { allreduce(v, MPI_FLOAT, MPI_SUM, "allreduce"); }
void allreduce_sum(std::span<double> v) { allreduce(v, MPI_DOUBLE, MPI_SUM, "allreduce"); }
void allreduce_max(std::span<double> v) { allreduce(v, MPI_DOUBLE, MPI_MAX, "allreduce(max)"); }
void allreduce_min(std::span<double> v) { allreduce(v, MPI_DOUBLE, MPI_MIN, "allreduce(min)"); }

void broadcast(std::span<std::byte> bytes, int root) {
  init();
  if (!state().mpi) return;
  // MPI counts are int: large payloads go in 1 GiB pieces.
  for (size_t off = 0; off < bytes.size(); off += size_t(1) << 30) {
    const size_t n = std::min(bytes.size() - off, size_t(1) << 30);
    MPI_Request req;
    check(MPI_Ibcast(bytes.data() + off, int(n), MPI_BYTE, root, MPI_COMM_WORLD, &req), "broadcast");
    wait_request(req, "broadcast", n);
  }
}

std::vector<uint64_t> allgather(uint64_t v) {
  init();
  std::vector<uint64_t> out(size_t(state().size), v);
  if (!state().mpi) return out;
  MPI_Request req;
  check(MPI_Iallgather(&v, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD, &req), "allgather");
  wait_request(req, "allgather", out.size() * 8);
  return out;
}

void barrier() {
  init();
  if (!state().mpi) return;
  MPI_Request req;
  check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "barrier");
  wait_request(req, "barrier", 0);
}
#else
void allreduce_sum(std::span<float>) {}
void allreduce_sum(std::span<double>) {}
void allreduce_max(std::span<double>) {}
void allreduce_min(std::span<double>) {}
void broadcast(std::span<std::byte>, int) {}
std::vector<uint64_t> allgather(uint64_t v) { return {v}; }
void barrier() {}
#endif

double allreduce_sum(double v) {
  allreduce_sum(std::span<double>(&v, 1));
  return v;
}
bool any(bool local) {
  double v = local ? 1 : 0;
  allreduce_max(std::span<double>(&v, 1));
  return v > 0;
}
bool all(bool local) {
  double v = local ? 1 : 0;
  allreduce_min(std::span<double>(&v, 1));
  return v > 0;
}

void broadcast(std::string& s, int root) {
  if (!active()) return;
  uint64_t n = s.size();
  broadcast(std::as_writable_bytes(std::span<uint64_t>(&n, 1)), root);
  s.resize(size_t(n));
  broadcast(std::as_writable_bytes(std::span<char>(s.data(), s.size())), root);
}

bool broadcast_flag(bool v, int root) {
  if (!active()) return v;
  std::byte b{uint8_t(v ? 1 : 0)};
  broadcast(std::span<std::byte>(&b, 1), root);
  return b != std::byte{0};
}

std::string on_root(const std::function<std::string()>& fn) {
  if (!active()) return fn();
  std::string payload;
  bool ok = true;
  if (is_main()) {
    try {
      payload = fn();
    } catch (const std::exception& e) {
      ok = false;
      payload = e.what();
    }
  }
  ok = broadcast_flag(ok);
  broadcast(payload);
  if (!ok) throw ReplicatedError(payload);
  return payload;
}

void agree(std::exception_ptr error) {
  if (!active()) {
    if (error) std::rethrow_exception(error);
    return;
  }
  std::string msg;
  if (error) try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
      msg = "[dist] an unknown error";
    }
  const std::vector<uint64_t> failed = allgather(error ? 1 : 0);
  const auto first = std::find(failed.begin(), failed.end(), uint64_t(1));
  if (first == failed.end()) return;
  const int root = int(first - failed.begin());
  broadcast(msg, root);
  throw ReplicatedError(root == 0 ? msg : fmt::format("(rank {}) {}", root, msg));
}

std::string read_from_root(const std::string& path, const std::string& what) {
  return on_root([&] { return read_file(path, what); });
}

std::map<std::string, Tensor> load_tensors_from_root(const std::string& path) {
  if (!active()) return safetensors::load_file(path);  // mapped, not read
  return safetensors::load_bytes(read_from_root(path, "safetensors"), path);
}

// ---- requests ----

struct Request::Impl {
#if RF_HAVE_MPI
  MPI_Request req = MPI_REQUEST_NULL;
#endif
  size_t bytes = 0;
  bool pending = false;
};

Request::Request() : impl_(std::make_unique<Impl>()) {}
Request::~Request() {
  if (impl_ && impl_->pending) wait();
}
Request::Request(Request&&) noexcept = default;
Request& Request::operator=(Request&& o) noexcept {
  if (this != &o) {
    if (impl_ && impl_->pending) wait();
    impl_ = std::move(o.impl_);
  }
  return *this;
}

bool Request::test() {
  if (!impl_ || !impl_->pending) return true;
#if RF_HAVE_MPI
  int done = 0;
  check(MPI_Test(&impl_->req, &done, MPI_STATUS_IGNORE), "allreduce");
  if (done) impl_->pending = false;
  return done != 0;
#else
  impl_->pending = false;
  return true;
#endif
}

void Request::wait() {
  if (!impl_ || !impl_->pending) return;
#if RF_HAVE_MPI
  wait_request(impl_->req, "allreduce", impl_->bytes);
#endif
  impl_->pending = false;
}

Request iallreduce_sum(std::span<float> v) {
  Request r;
  init();
#if RF_HAVE_MPI
  if (!state().mpi || v.empty()) return r;
  const auto t0 = Clock::now();
  check(MPI_Iallreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r.impl_->req),
        "allreduce");
  state().stats.seconds += seconds_since(t0);
  state().stats.bytes += v.size_bytes();
  ++state().stats.calls;
  r.impl_->bytes = v.size_bytes();
  r.impl_->pending = true;
#endif
  return r;
}

CommStats comm_stats() { return state().stats; }
void reset_comm_stats() { state().stats = {}; }
void add_comm_time(double seconds) { state().stats.seconds += seconds; }

// ---- process-level ----

void silence_other_ranks() {
  init();
  State& s = state();
  if (s.rank == 0 || s.size == 1) return;
  if (const char* v = std::getenv("RANKFORGE_DIST_VERBOSE"); v && std::string_view(v) == "1") return;
  std::fflush(stdout);
  std::fflush(stderr);
  s.err_fd = ::dup(2);
  const int null = ::open("/dev/null", O_WRONLY);
  if (null < 0 || s.err_fd < 0) {
    s.err_fd = 2;
    return;
  }
  ::dup2(null, 1);
  ::dup2(null, 2);
  ::close(null);
}

void print_error(const std::string& message) {
  write_err(state().size > 1 ? fmt::format("[rank {}] {}", state().rank, message) : message);
}

void abort(int code, const std::string& message) {
  print_error(message);
#if RF_HAVE_MPI
  if (state().mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

}  // namespace rf::dist
