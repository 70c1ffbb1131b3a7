#pragma once
// Whole-file writes that never leave half a file: a temporary sibling, fsync, then rename.
#include <string>
#include <string_view>

namespace rf {

// Throws std::runtime_error "[save] <path>: <reason>"; the temporary file is removed on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);
std::string read_file(const std::string& path, std::string_view who);  // "[<who>] <path>: <reason>"
// Loaders that take a folder: "[<who>] <path>: no such directory", or "[<who>] <path> is a file; expected
// <expected>" (e.g. "a checkpoint folder (config.json + *.safetensors)"), so a wrong path says which it is.
void require_directory(const std::string& path, std::string_view who, std::string_view expected);

}  // namespace rf
