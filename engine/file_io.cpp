#include "engine/file_io.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rf {

namespace fs = std::filesystem;

void write_file_atomic(const std::string& path, std::string_view bytes) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("[save] {}: {}", path, std::strerror(errno)));
  auto fail = [&](int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("[save] {}: {}", path, std::strerror(err)));
  };
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(w < 0 ? errno : EIO);
    p += w;
    n -= size_t(w);
  }
  if (::fsync(fd) != 0) fail(errno);
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("[save] {}: {}", path, std::strerror(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("[save] {}: {}", path, std::strerror(err)));
  }
}

std::string read_file(const std::string& path, std::string_view who) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw std::runtime_error(fmt::format("[{}] {}: {}", who, path, std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) throw std::runtime_error(fmt::format("[{}] {}: {}", who, path, std::strerror(EISDIR)));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("[{}] {}: {}", who, path, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void require_directory(const std::string& path, std::string_view who, std::string_view expected) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      throw std::runtime_error(fmt::format("[{}] {}: no such directory", who, path));
    throw std::runtime_error(fmt::format("[{}] {}: {}", who, path, std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) return;
  throw std::runtime_error(fmt::format("[{}] {} is {}; expected {}", who, path,
                                       S_ISREG(st.st_mode) ? "a file" : "not a directory", expected));
}

void write_dir_atomic(const fs::path& dir, const std::function<void(const fs::path& tmp)>& fill) {
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  const std::string name = dir.filename().string();
  const fs::path tmp = parent / fmt::format("{}.tmp.{}", name, ::getpid()),
                 old = parent / fmt::format("{}.old.{}", name, ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    fill(tmp);
    if (fs::exists(dir)) fs::rename(dir, old);
    try {
      fs::rename(tmp, dir);
    } catch (...) {
      if (fs::exists(old)) fs::rename(old, dir, ec);  // put the previous folder back
      throw;
    }
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw std::runtime_error(fmt::format("[save] {}: {}", dir.string(), e.code().message()));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(old, ec);
}

}  // namespace rf
