#include "tools/run_files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>

namespace rf::tools {

namespace fs = std::filesystem;

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_stop_signal(int sig) { g_signal = sig; }

std::string read_holder(int fd) {
  char buf[128] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s(buf, n > 0 ? size_t(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "pid unknown" : s;
}

}  // namespace

DirLock::DirLock(const fs::path& dir, const std::string& who) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw std::runtime_error(fmt::format("[{}] {}: cannot create the folder: {}", who, dir.string(), ec.message()));
  const fs::path file = dir / kFile;
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw std::runtime_error(
        fmt::format("[{}] {}: cannot open {}: {}", who, dir.string(), kFile, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw std::runtime_error(
          fmt::format("[{}] {} is in use by another rankforge process ({}); wait for it or choose another folder", who,
                      dir.string(), holder));
    throw std::runtime_error(fmt::format("[{}] {}: cannot lock {}: {}", who, dir.string(), kFile, std::strerror(err)));
  }
  const std::string me = fmt::format("pid {}: {}\n", ::getpid(), who);
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
    // The lock holds without the note; a second process then says "pid unknown".
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock; the file stays (removing it would race a new holder)
}

bool has_entries(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename() != DirLock::kFile) return true;
  return false;
}

void install_stop_signals() {
  g_signal = 0;
  for (int s : {SIGINT, SIGTERM, SIGHUP}) std::signal(s, on_stop_signal);
  std::signal(SIGXFSZ, SIG_IGN);
}

void restore_stop_signals() {
  for (int s : {SIGINT, SIGTERM, SIGHUP}) std::signal(s, SIG_DFL);
}

int stop_signal() { return g_signal; }

}  // namespace rf::tools
