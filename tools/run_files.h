#pragma once
// What keeps a run folder safe: one process per folder (an advisory lock) and the signals that ask a
// run to stop. Whole folders are written with write_dir_atomic (engine/file_io.h).
#include <filesystem>
#include <functional>
#include <string>

#include "engine/file_io.h"

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

// Whether a folder has entries other than the lock file.
bool has_entries(const std::filesystem::path& dir);

// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process (what a run checks between
// steps); SIGXFSZ is ignored so a file-size limit fails a write with an error instead of a crash.
void install_stop_signals();
void restore_stop_signals();
int stop_signal();  // 0, or the signal received since install_stop_signals()

}  // namespace rf::tools
