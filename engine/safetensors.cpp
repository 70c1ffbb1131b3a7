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
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "engine/file_io.h"
#include "engine/json_io.h"
#include "engine/utf8.h"

namespace rf::safetensors {

namespace {
[[noreturn]] void fail(const std::string& what, const std::string& msg) {
  throw std::runtime_error(fmt::format("[safetensors] {}: {}", what, msg));
}
}  // namespace

std::shared_ptr<File> File::open(const std::string& path) {
  // O_NONBLOCK: a FIFO given by mistake fails below instead of blocking open() forever.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, S_ISDIR(st.st_mode) ? std::strerror(EISDIR) : "not a regular file");
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

std::shared_ptr<File> File::from_bytes(std::string bytes, const std::string& name) {
  std::shared_ptr<File> f(new File());
  f->path_ = name;
  f->owned_ = std::move(bytes);
  f->size_ = f->owned_.size();
  f->header_ = parse(std::span<const std::byte>(reinterpret_cast<const std::byte*>(f->owned_.data()), f->size_), name);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_.emplace(f->header_.tensors[i].name, i);
  f->map_ = f->size_ ? reinterpret_cast<const std::byte*>(f->owned_.data()) : nullptr;
  f->self_ = f;
  return f;
}

File::~File() {
  if (map_ && owned_.empty()) ::munmap(const_cast<std::byte*>(map_), size_);
}

Tensor File::alias(std::span<const std::byte> b, const Shape& shape, DType dtype, Device d) const {
  // Zero copy: the tensor aliases the mapping and keeps the File alive.
  std::shared_ptr<const File> owner = self_.lock();
  auto buf = backend_for(d).wrap_host(const_cast<std::byte*>(b.data()), b.size(), owner);
  if (!buf) return Tensor();
  auto impl = std::make_shared<TensorImpl>();
  impl->buffer = std::move(buf);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->id = next_tensor_id();
  return Tensor(impl);
}

void File::release(const TensorInfo& t) const {
  if (!owned_.empty()) return;  // heap bytes (from_bytes): DONTNEED would zero them, not re-read a file
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const auto lo = reinterpret_cast<uintptr_t>(map_ + header_.data_start() + t.begin);
  const auto hi = reinterpret_cast<uintptr_t>(map_ + header_.data_start() + t.end);
  const uintptr_t a = (lo + page - 1) / page * page, b = hi / page * page;
  if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);  // advice: a failure only costs memory
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
  if (!t) fail(path_, fmt::format("no tensor named {}", quote_name(name)));
  return load(*t, opt);
}

Tensor File::load(const TensorInfo& t, const LoadOptions& opt) const {
  auto rt = to_rf(t.dtype);
  if (!rt && t.dtype != StDType::I16)
    fail(path_, fmt::format("tensor {}: dtype {} is not supported", quote_name(t.name), dtype_string(t.dtype)));
  // parse() bounds the byte size, not the dims of an empty tensor ([0, 2^63]); Shape is int64 and
  // rf::numel multiplies every dim, so the product of the non-zero dims must fit.
  int64_t prod = 1;
  for (uint64_t d : t.shape)
    if (d > uint64_t(INT64_MAX) || __builtin_mul_overflow(prod, std::max<int64_t>(int64_t(d), 1), &prod))
      fail(path_, fmt::format("tensor {}: shape {} is too large", quote_name(t.name), fmt::join(t.shape, "x")));
  Shape shape(t.shape.begin(), t.shape.end());
  auto b = bytes(t);
  if (t.dtype == StDType::I16) {  // widened to I32: the engine has no 16-bit integers (spops' int16 indices)
    std::vector<int32_t> v(b.size() / 2);
    for (size_t i = 0; i < v.size(); ++i) {
      int16_t x;
      std::memcpy(&x, b.data() + 2 * i, 2);
      v[i] = x;
    }
    return from_data(v, shape, opt.device);
  }
  // Kernels treat BOOL bytes as 0/1 (masks are summed and compared), so other values are refused.
  if (*rt == DType::Bool)
    for (size_t i = 0; i < b.size(); ++i)
      if (uint8_t(b[i]) > 1)
        fail(path_, fmt::format("tensor {}: BOOL byte {} at element {} is neither 0 nor 1", quote_name(t.name),
                                uint8_t(b[i]), i));
  const bool is_float = *rt == DType::F32 || *rt == DType::F16 || *rt == DType::BF16;
  if (opt.float_dtype && is_float && *opt.float_dtype != *rt) {
    // Read in place (host) and converted once: peak memory holds this tensor twice at most, never the model.
    return from_raw(b, shape, *rt).to(*opt.float_dtype).to(opt.device);
  }
  const bool convert = (*rt == DType::F16 || *rt == DType::BF16) && !opt.keep_16bit && !(opt.float_dtype && is_float);
  const size_t esize = dtype_size(*rt);
  const bool aligned = reinterpret_cast<uintptr_t>(b.data()) % esize == 0;
  if (!convert && aligned && opt.device.type == DeviceType::CPU && !b.empty())
    if (Tensor t = alias(b, shape, *rt, opt.device); t.defined()) return t;
  if (!convert) return from_raw(b, shape, *rt, opt.device);
  // Widened on the host: devices only move 16-bit storage through copy().
  return from_raw(b, shape, *rt).to(DType::F32).to(opt.device);
}

std::map<std::string, Tensor> load_file(const std::string& path, const LoadOptions& opt) {
  auto f = File::open(path);
  std::map<std::string, Tensor> out;
  for (const auto& t : f->header().tensors) out.emplace(t.name, f->load(t, opt));
  return out;
}

std::map<std::string, Tensor> load_bytes(std::string bytes, const std::string& name, const LoadOptions& opt) {
  auto f = File::from_bytes(std::move(bytes), name);
  std::map<std::string, Tensor> out;
  for (const auto& t : f->header().tensors) out.emplace(t.name, f->load(t, opt));
  return out;
}

namespace {
void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path, fmt::format("write failed: {}", std::strerror(w < 0 ? errno : EIO)));
    p += w;
    n -= size_t(w);
  }
}
}  // namespace

void save_file(const std::map<std::string, Tensor>& tensors, const std::string& path,
               const std::map<std::string, std::string>& metadata, const std::map<std::string, StDType>& narrow,
               const std::map<std::string, RawTensor>& raw) {
  struct Entry {
    const std::string* name;
    Tensor t;
    StDType st;
    uint64_t bytes;
    const RawTensor* raw = nullptr;
    std::vector<uint64_t> shape() const {
      return raw ? raw->shape : std::vector<uint64_t>(t.shape().begin(), t.shape().end());
    }
  };
  auto utf8 = [](const std::string& s) { return utf8_invalid_at(s) == s.size(); };
  std::vector<Entry> es;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__" || !utf8(name))
      fail(path, fmt::format("invalid tensor name {}", quote_name(name)));
    if (!t.defined()) fail(path, fmt::format("tensor {} is undefined", quote_name(name)));
    Tensor c = t.detach().to(Device{}).contiguous();
    if (auto nw = narrow.find(name); nw != narrow.end()) {
      if (nw->second != StDType::I16 || c.dtype() != DType::I32)
        fail(path, fmt::format("tensor {}: only I32 narrows (to I16), not {} to {}", quote_name(name),
                               dtype_name(c.dtype()), dtype_string(nw->second)));
      for (int32_t v : c.to_vector<int32_t>())
        if (v < INT16_MIN || v > INT16_MAX)
          fail(path, fmt::format("tensor {}: value {} does not fit I16", quote_name(name), v));
      es.push_back({&name, c, StDType::I16, uint64_t(c.numel()) * 2});
      continue;
    }
    es.push_back({&name, c, from_rf(c.dtype()), uint64_t(c.numel()) * dtype_size(c.dtype())});
  }
  for (const auto& [name, r] : raw) {
    if (name.empty() || name == "__metadata__" || !utf8(name) || tensors.count(name))
      fail(path, fmt::format("invalid or duplicate tensor name {}", quote_name(name)));
    uint64_t n = 1;
    for (uint64_t d : r.shape) n *= d;
    if (n * dtype_bits(r.dtype) / 8 != r.bytes.size())
      fail(path, fmt::format("tensor {}: {} bytes for shape [{}] of {}", quote_name(name), r.bytes.size(),
                             fmt::join(r.shape, ", "), dtype_string(r.dtype)));
    es.push_back({&name, Tensor(), r.dtype, uint64_t(r.bytes.size()), &r});
  }
  for (const auto& [k, v] : metadata)
    if (!utf8(k) || !utf8(v)) fail(path, fmt::format("__metadata__ entry {} is not UTF-8", quote_name(k)));
  // The reference writer's order: descending alignment, then name; offsets back to back.
  std::stable_sort(es.begin(), es.end(), [](const Entry& a, const Entry& b) {
    return dtype_bits(a.st) != dtype_bits(b.st) ? dtype_bits(a.st) > dtype_bits(b.st) : *a.name < *b.name;
  });
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + nlohmann::json(metadata).dump();
  uint64_t offset = 0;
  for (const auto& e : es) {
    nlohmann::json entry = {
        {"dtype", std::string(dtype_string(e.st))}, {"shape", e.shape()}, {"data_offsets", {offset, offset + e.bytes}}};
    if (header.size() > 1) header += ',';  // appended piecewise: g++ 12 warns (-Wrestrict) on "," + temporary
    header += nlohmann::json(*e.name).dump();
    header += ':';
    header += entry.dump();
    offset += e.bytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // keeps every tensor 8-byte aligned in a mapping
  if (header.size() > kMaxHeaderSize)
    fail(path, fmt::format("header too large: {} bytes (limit {})", header.size(), kMaxHeaderSize));

  // Written beside the target and renamed over it: readers see the old file or the whole new one.
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) fail(path, fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  try {
    uint64_t n = header.size();
    write_all(fd, &n, 8, path);
    write_all(fd, header.data(), header.size(), path);
    constexpr size_t kChunk = size_t(64) << 20;  // staging for the download, not a copy of each tensor
    std::vector<std::byte> raw;
    for (const auto& e : es) {
      if (e.raw) {
        write_all(fd, e.raw->bytes.data(), e.raw->bytes.size(), path);
        continue;
      }
      if (e.st == StDType::I16) {  // narrowed on the host (checked above)
        std::vector<int16_t> v;
        for (int32_t x : e.t.to_vector<int32_t>()) v.push_back(int16_t(x));
        write_all(fd, v.data(), v.size() * 2, path);
        continue;
      }
      const size_t base = size_t(e.t.offset()) * dtype_size(e.t.dtype());
      for (uint64_t done = 0; done < e.bytes; done += raw.size()) {
        raw.resize(size_t(std::min<uint64_t>(kChunk, e.bytes - done)));
        e.t.backend().download(e.t.buffer(), base + size_t(done), raw);
        write_all(fd, raw.data(), raw.size(), path);
      }
    }
    if (::fsync(fd) != 0) fail(path, fmt::format("fsync failed: {}", std::strerror(errno)));
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail(path, fmt::format("close failed: {}", std::strerror(errno)));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(path, fmt::format("cannot rename {} into place: {}", tmp, std::strerror(errno)));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Best effort: make the rename itself durable.
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

namespace {
// The index as JSON, refusing duplicate keys (nlohmann would keep one silently, so a tensor listed
// twice could load from either shard).
nlohmann::json read_index(const std::string& file) {
  const std::string text = read_file(file, "safetensors");
  std::vector<std::set<std::string>> open_objects;
  std::string dup;
  auto cb = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start)
      open_objects.emplace_back();
    else if (ev == E::object_end && !open_objects.empty())
      open_objects.pop_back();
    else if (ev == E::key && !open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second &&
             dup.empty())
      dup = parsed.get<std::string>();
    return true;
  };
  nlohmann::json j = parse_json_text(text, file, "safetensors", cb);
  if (!dup.empty()) fail(file, fmt::format("invalid JSON: duplicate key {}", quote_name(dup)));
  return j;
}
}  // namespace

Checkpoint Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  fs::path p(dir);
  auto add = [&](const std::string& file) {
    c.files_.push_back(File::open(file));
    return c.files_.size() - 1;
  };
  auto add_all = [&](const std::string& file) {
    size_t i = add(file);
    for (const auto& t : c.files_[i]->header().tensors) c.where_.emplace(t.name, i);
  };
  std::error_code ec;
  auto st = fs::status(p, ec);
  if (!fs::exists(st)) fail(dir, ec && st.type() != fs::file_type::not_found ? ec.message() : std::strerror(ENOENT));
  if (!fs::is_directory(st)) {  // a single .safetensors file
    add_all(dir);
    return c;
  }
  const fs::path index = p / "model.safetensors.index.json";
  if (fs::exists(index, ec)) {
    const std::string ix = index.string();
    nlohmann::json j = read_index(ix);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) fail(ix, "no 'weight_map' object");
    std::map<std::string, size_t> shard_index;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(ix, fmt::format("weight_map entry {} is not a file name", quote_name(it.key())));
      const std::string& shard = it->get_ref<const std::string&>();
      // Shards are siblings of the index: a path here could read files outside the checkpoint.
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        fail(ix, fmt::format("shard {} must be a file name in the same directory", quote_name(shard)));
      auto [s, fresh] = shard_index.emplace(shard, 0);
      if (fresh) s->second = add((p / shard).string());
      if (!c.files_[s->second]->find(it.key()))
        fail(ix, fmt::format("tensor {} is listed in {} but that shard does not hold it", quote_name(it.key()), shard));
      c.where_.emplace(it.key(), s->second);
    }
    // A tensor must live in exactly one shard, and every tensor a shard holds must be indexed.
    for (size_t i = 0; i < c.files_.size(); ++i)
      for (const auto& t : c.files_[i]->header().tensors) {
        auto w = c.where_.find(t.name);
        if (w == c.where_.end())
          fail(ix, fmt::format("tensor {} in {} is missing from weight_map", quote_name(t.name), c.files_[i]->path()));
        if (w->second != i)
          fail(ix, fmt::format("tensor {} appears in two shards: {} and {}", quote_name(t.name),
                               c.files_[w->second]->path(), c.files_[i]->path()));
      }
    return c;
  }
  const fs::path single = p / "model.safetensors";
  if (!fs::exists(single, ec))
    fail(dir, fmt::format("no model.safetensors or model.safetensors.index.json in {}", dir));
  add_all(single.string());
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
  if (it == where_.end())
    fail(files_.empty() ? "checkpoint" : files_[0]->path(), fmt::format("no tensor named {}", quote_name(name)));
  return *files_[it->second]->find(name);
}

const std::shared_ptr<File>& Checkpoint::file_of(std::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    fail(files_.empty() ? "checkpoint" : files_[0]->path(), fmt::format("no tensor named {}", quote_name(name)));
  return files_[it->second];
}

Tensor Checkpoint::load(std::string_view name, const LoadOptions& opt) const {
  auto it = where_.find(name);
  if (it == where_.end())
    fail(files_.empty() ? "checkpoint" : files_[0]->path(), fmt::format("no tensor named {}", quote_name(name)));
  return files_[it->second]->load(name, opt);
}

}  // namespace rf::safetensors
