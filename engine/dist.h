#pragma once
// rf::dist: the process group of a data-parallel run. With MPI built in (-Dmpi) and the process
// started by a launcher (mpirun, srun), it is MPI_COMM_WORLD; otherwise one process, and every call
// below is a no-op (sums return their input, a broadcast keeps the root's value). MPI is initialised
// lazily by the first call and finalised at exit. Every collective waits in a polling loop with a
// deadline (RANKFORGE_DIST_TIMEOUT seconds, default 1800), so a dead or hung peer ends the job with
// an error instead of a silent hang; every rank must issue the same collectives in the same order.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace rf::dist {

bool built_with_mpi();
// Whether this process was started by an MPI launcher (Open MPI's mpirun, Slurm/PMI, PMIx): the
// environment says so. RANKFORGE_DIST=0 turns the whole layer off (one process, MPI untouched).
bool launched();
void init();  // idempotent; the calls below run it
int rank();
int world_size();
int local_rank();  // the rank among the processes on this node (picks the node's GPU)
inline bool is_main() { return rank() == 0; }
inline bool active() { return world_size() > 1; }
// MPI's library version line ("Open MPI v4.1.4, ..."), or why there is none.
std::string describe();

// Blocking collectives (all ranks call them, same order, same sizes).
void allreduce_sum(std::span<float> v);
void allreduce_sum(std::span<double> v);
void allreduce_max(std::span<double> v);
void allreduce_min(std::span<double> v);
double allreduce_sum(double v);
bool any(bool local);  // true on every rank when it is true on some rank
bool all(bool local);
void broadcast(std::span<std::byte> bytes, int root = 0);
void broadcast(std::string& s, int root = 0);  // the root's string on every rank (length first)
bool broadcast_flag(bool v, int root = 0);     // the root's value: lockstep decisions
std::vector<uint64_t> allgather(uint64_t v);   // (world_size) one value per rank
void barrier();

// An error every rank raises at the same point (on_root): each may exit on its own, nothing to abort.
class ReplicatedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Agreement after a step every rank runs on its own (reading a config, a model, data; no collectives
// inside): when it failed on some rank (error set there), every rank throws ReplicatedError with the
// first failing rank's message, so each exits with one line instead of aborting the others. In one
// process the error is rethrown as it was.
void agree(std::exception_ptr error);
// Runs fn on every rank, then agree()s on how it ended.
template <class F>
void agreed(F&& fn) {
  std::exception_ptr error;
  try {
    fn();
  } catch (...) {
    error = std::current_exception();
  }
  agree(error);
}

// fn runs on rank 0 only and its result reaches every rank. When fn throws there, every rank
// throws ReplicatedError with the same message, so no rank waits for a root that failed.
std::string on_root(const std::function<std::string()>& fn);

// Files rank 0 can read and the others may not (no shared filesystem): rank 0 reads, every rank gets
// the bytes; a failure to read raises the same error everywhere. One process: a plain read.
std::string read_from_root(const std::string& path, const std::string& what);
std::map<std::string, Tensor> load_tensors_from_root(const std::string& path);  // a safetensors file

// A sum in flight (MPI_Iallreduce): the buffer must stay alive and untouched until wait() returns.
class Request {
 public:
  Request();
  ~Request();  // waits if still pending: a collective cannot be abandoned
  Request(Request&&) noexcept;
  Request& operator=(Request&&) noexcept;
  bool test();  // true when complete; drives MPI's progress
  void wait();  // with the deadline

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  friend Request iallreduce_sum(std::span<float> v);
};
Request iallreduce_sum(std::span<float> v);

// Seconds spent inside collectives (waiting included) and bytes reduced since the last reset: the
// communication share `bench train` reports.
struct CommStats {
  double seconds = 0;
  uint64_t bytes = 0;
  int64_t calls = 0;
};
CommStats comm_stats();
void reset_comm_stats();
void add_comm_time(double seconds);  // time a caller spent packing or unpacking for communication

// Ranks other than 0 send stdout and stderr to /dev/null (one copy of every log line, from rank 0);
// RANKFORGE_DIST_VERBOSE=1 keeps them. print_error and abort still reach the real stderr.
void silence_other_ranks();
void print_error(const std::string& message);  // "[rank r] message" when world_size() > 1

// Ends every rank's process (MPI_Abort) with code, after the message on stderr; exits plainly in a
// single process. The launcher reports the abort.
[[noreturn]] void abort(int code, const std::string& message);

}  // namespace rf::dist
