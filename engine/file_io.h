#pragma once
// Whole-file writes that never leave half a file: a temporary sibling, fsync, then rename; whole
// folders filled beside their target and swapped in by rename.
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace rf {

// Throws std::runtime_error "[save] <path>: <reason>"; the temporary file is removed on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);
// Fills a fresh temporary sibling of `dir` with fill(tmp), then swaps it in by rename (the old folder,
// if any, is renamed aside first and removed last). On any failure the temporary folder is removed,
// `dir` is left as it was, and the error propagates. Readers see the old folder or the whole new one.
void write_dir_atomic(const std::filesystem::path& dir,
                      const std::function<void(const std::filesystem::path& tmp)>& fill);

std::string read_file(const std::string& path, std::string_view who);  // "[<who>] <path>: <reason>"
// Loaders that take a folder: "[<who>] <path>: no such directory", or "[<who>] <path> is a file; expected
// <expected>" (e.g. "a checkpoint folder (config.json + *.safetensors)"), so a wrong path says which it is.
void require_directory(const std::string& path, std::string_view who, std::string_view expected);

}  // namespace rf
