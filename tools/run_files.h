#pragma once
// What keeps a run folder safe: one process per folder (an advisory lock), whole folders written
// beside their target and swapped in by rename, and the signals that ask a run to stop.
#include <filesystem>
#include <functional>
#include <string>

namespace rf::tools {

// Holds an exclusive flock on <dir>/.rankforge.lock (creating dir) until destroyed. A second holder
// fails at once: "[<who>] <dir> is in use by another rankforge process (pid N: train); ...".
class DirLock {
 public:
  DirLock(const std::filesystem::path& dir, const std::string& who);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  static constexpr const char* kFile = ".rankforge.lock";

 private:
  int fd_ = -1;
};

// Fills a fresh temporary sibling of `dir` with fill(tmp), then swaps it in by rename (the old folder,
// if any, is renamed aside first and removed last). On any failure the temporary folder is removed,
// `dir` is left as it was, and the error propagates. Readers see the old folder or the whole new one.
void write_dir_atomic(const std::filesystem::path& dir, const std::function<void(const std::filesystem::path& tmp)>& fill);

// Whether a folder has entries other than the lock file.
bool has_entries(const std::filesystem::path& dir);

// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process (what a run checks between
// steps); SIGXFSZ is ignored so a file-size limit fails a write with an error instead of a crash.
void install_stop_signals();
void restore_stop_signals();
int stop_signal();  // 0, or the signal received since install_stop_signals()

}  // namespace rf::tools
