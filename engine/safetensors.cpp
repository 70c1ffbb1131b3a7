// safetensors files: memory-mapped validated reading (zero-copy on the CPU), atomic writing, and
// checkpoint directories (single file or sharded through model.safetensors.index.json).
#include "engine/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace rf::safetensors {

namespace {
[[noreturn]] void fail(const std::string& what, const std::string& msg) {
  throw std::runtime_error(fmt::format("[safetensors] {}: {}", what, msg));
}
}  // namespace

std::shared_ptr<File> File::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int err = errno;
    ::close(fd);
    fail(path, S_ISDIR(st.st_mode) ? "is a directory" : S_ISREG(st.st_mode) ? std::strerror(err) : "not a regular file");
  }
  std::shared_ptr<File> f(new File());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    // Private and writable: in-place updates of loaded tensors copy the page, never touching the file.
    void* p = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail(path, fmt::format("cannot map {} bytes: {}", f->size_, std::strerror(err)));
    }
    f->map_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);
  f->header_ = parse(std::span<const std::byte>(f->map_, f->size_), path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_.emplace(f->header_.tensors[i].name, i);
  f->self_ = f;
  return f;
}

File::~File() {
  if (map_) ::munmap(const_cast<std::byte*>(map_), size_);
}

const TensorInfo* File::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const std::byte> File::bytes(const TensorInfo& t) const {
  return {map_ + header_.data_start() + t.begin, size_t(t.end - t.begin)};
}

Tensor File::load(std::string_view name, const LoadOptions& opt) const {
  const TensorInfo* t = find(name);
  if (!t) fail(path_, fmt::format("no tensor named '{}'", name));
  return load(*t, opt);
}

Tensor File::load(const TensorInfo& t, const LoadOptions& opt) const {
  auto rt = to_rf(t.dtype);
  if (!rt) fail(path_, fmt::format("tensor '{}' has dtype {}, which rankforge does not load", t.name, dtype_string(t.dtype)));
  Shape shape(t.shape.begin(), t.shape.end());
  auto b = bytes(t);
  if (*rt == DType::Bool)
    for (std::byte x : b)
      if (uint8_t(x) > 1) fail(path_, fmt::format("tensor '{}': BOOL byte {} is neither 0 nor 1", t.name, uint8_t(x)));
  const bool convert = (*rt == DType::F16 || *rt == DType::BF16) && !opt.keep_16bit;
  const size_t esize = dtype_size(*rt);
  const bool aligned = reinterpret_cast<uintptr_t>(b.data()) % esize == 0;
  if (!convert && aligned && opt.device.type == DeviceType::CPU && !b.empty()) {
    // Zero copy: the tensor aliases the mapping and keeps the File alive.
    std::shared_ptr<const File> owner = self_.lock();
    auto buf = backend_for(opt.device).wrap_host(const_cast<std::byte*>(b.data()), b.size(), owner);
    if (buf) {
      auto impl = std::make_shared<TensorImpl>();
      impl->buffer = std::move(buf);
      impl->shape = shape;
      impl->strides = contiguous_strides(shape);
      impl->dtype = *rt;
      impl->id = next_tensor_id();
      return Tensor(impl);
    }
  }
  Tensor host = from_raw(b, shape, *rt);
  if (convert) host = host.to(DType::F32);
  return host.to(opt.device);
}

std::map<std::string, Tensor> load_file(const std::string& path, const LoadOptions& opt) {
  auto f = File::open(path);
  std::map<std::string, Tensor> out;
  for (const auto& t : f->header().tensors) out.emplace(t.name, f->load(t, opt));
  return out;
}

void save_file(const std::map<std::string, Tensor>& tensors, const std::string& path,
               const std::map<std::string, std::string>& metadata) {
  struct Entry {
    const std::string* name;
    Tensor t;
    StDType st;
  };
  std::vector<Entry> es;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") fail(path, fmt::format("invalid tensor name '{}'", name));
    if (!t.defined()) fail(path, fmt::format("tensor '{}' is undefined", name));
    es.push_back({&name, t.detach().to(Device{}).contiguous(), from_rf(t.dtype())});
  }
  // The reference writer's order: descending alignment, then name; offsets back to back.
  std::stable_sort(es.begin(), es.end(), [](const Entry& a, const Entry& b) {
    return dtype_bits(a.st) != dtype_bits(b.st) ? dtype_bits(a.st) > dtype_bits(b.st) : *a.name < *b.name;
  });
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + nlohmann::json(metadata).dump();
  uint64_t offset = 0;
  for (const auto& e : es) {
    uint64_t n = uint64_t(e.t.numel()) * dtype_size(e.t.dtype());
    nlohmann::json entry = {{"dtype", std::string(dtype_string(e.st))}, {"shape", e.t.shape()}, {"data_offsets", {offset, offset + n}}};
    header += (header.size() > 1 ? "," : "") + nlohmann::json(*e.name).dump() + ":" + entry.dump();
    offset += n;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kMaxHeaderSize) fail(path, fmt::format("header too large: {} bytes (limit {})", header.size(), kMaxHeaderSize));

  namespace fs = std::filesystem;
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  auto cleanup_fail = [&](const std::string& why) {
    std::error_code ec;
    fs::remove(tmp, ec);
    fail(path, why);
  };
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
    uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), std::streamsize(header.size()));
    for (const auto& e : es) {
      if (e.t.numel() == 0) continue;
      std::vector<std::byte> raw(size_t(e.t.numel()) * dtype_size(e.t.dtype()));
      e.t.backend().download(e.t.buffer(), size_t(e.t.offset()) * dtype_size(e.t.dtype()), raw);
      out.write(reinterpret_cast<const char*>(raw.data()), std::streamsize(raw.size()));
    }
    out.flush();
    if (!out) cleanup_fail(fmt::format("write failed: {}", std::strerror(errno)));
  }
  int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) cleanup_fail(fmt::format("cannot rename the temporary file into place: {}", ec.message()));
}

Checkpoint Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  fs::path p(dir);
  auto add = [&](const std::string& file) {
    c.files_.push_back(File::open(file));
    return c.files_.size() - 1;
  };
  if (fs::is_regular_file(p)) {
    size_t i = add(dir);
    for (const auto& t : c.files_[i]->header().tensors) c.where_.emplace(t.name, i);
    return c;
  }
  fs::path index = p / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::ifstream in(index);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail(index.string(), fmt::format("invalid JSON: {}", e.what()));
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index.string(), "no 'weight_map' object");
    std::map<std::string, size_t> shard_index;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(index.string(), fmt::format("weight_map['{}'] is not a file name", it.key()));
      std::string shard = it->get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        fail(index.string(), fmt::format("shard '{}' must be a file name in the same directory", shard));
      auto [s, fresh] = shard_index.emplace(shard, 0);
      if (fresh) s->second = add((p / shard).string());
      if (!c.files_[s->second]->find(it.key()))
        fail(index.string(), fmt::format("tensor '{}' is listed in {} but that shard does not hold it", it.key(), shard));
      c.where_.emplace(it.key(), s->second);
    }
    // A tensor must live in exactly one shard, and every tensor a shard holds must be indexed.
    for (size_t i = 0; i < c.files_.size(); ++i)
      for (const auto& t : c.files_[i]->header().tensors) {
        auto w = c.where_.find(t.name);
        if (w == c.where_.end()) fail(index.string(), fmt::format("tensor '{}' in {} is missing from weight_map", t.name, c.files_[i]->path()));
        if (w->second != i) fail(index.string(), fmt::format("tensor '{}' appears in two shards", t.name));
      }
    return c;
  }
  fs::path single = p / "model.safetensors";
  if (!fs::exists(single)) fail(dir, "no model.safetensors or model.safetensors.index.json");
  size_t i = add(single.string());
  for (const auto& t : c.files_[i]->header().tensors) c.where_.emplace(t.name, i);
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, i] : where_) out.push_back(n);
  return out;
}

bool Checkpoint::contains(std::string_view name) const { return where_.find(name) != where_.end(); }

const TensorInfo& Checkpoint::info(std::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(files_.empty() ? "checkpoint" : files_[0]->path(), fmt::format("no tensor named '{}'", name));
  return *files_[it->second]->find(name);
}

Tensor Checkpoint::load(std::string_view name, const LoadOptions& opt) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(files_.empty() ? "checkpoint" : files_[0]->path(), fmt::format("no tensor named '{}'", name));
  return files_[it->second]->load(name, opt);
}

}  // namespace rf::safetensors
