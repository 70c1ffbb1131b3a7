#pragma once
// safetensors: a validating, memory-mapping reader and an atomic writer (the format of
// huggingface/safetensors; every rule of its reference reader is enforced, see safetensors_format.cpp).
// Errors are std::runtime_error with one line: "[safetensors] <file>: <reason> (<tensor or byte offset>)".
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace rf::safetensors {

// Every dtype string of the format, in the reference's increasing-alignment order.
enum class StDType : uint8_t {
  BOOL,
  F4,
  F6_E2M3,
  F6_E3M2,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  F8_E4M3FNUZ,
  F8_E5M2FNUZ,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,
  F64,
  I64,
  U64
};
std::string_view dtype_string(StDType t);
std::optional<StDType> parse_dtype(std::string_view s);
size_t dtype_bits(StDType t);
std::optional<DType> to_rf(StDType t);  // the dtypes rankforge computes with or stores
StDType from_rf(DType t);

constexpr uint64_t kMaxHeaderSize = 100'000'000;
// A tensor name for messages: single-quoted, control characters escaped (errors stay one line).
std::string quote_name(std::string_view name);

struct TensorInfo {
  std::string name;
  StDType dtype;
  std::vector<uint64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range relative to the data section
};

struct Header {
  std::vector<TensorInfo> tensors;  // sorted by data offset (file order)
  std::map<std::string, std::string> metadata;
  uint64_t header_size = 0;  // N
  uint64_t data_start() const { return 8 + header_size; }
};

// Validates a whole file image and returns its header; `what` names the file in errors.
// Depends on nothing but the bytes (the fuzz target calls it directly).
Header parse(std::span<const std::byte> file, std::string_view what);

struct LoadOptions {
  Device device{};
  bool keep_16bit = false;  // F16/BF16 stay 16-bit in memory (else converted to F32)
  // Set: every F32/F16/BF16 tensor is stored in this dtype (F32, F16 or BF16), converted tensor by
  // tensor as it loads (the file's bytes are read in place), whatever keep_16bit says.
  std::optional<DType> float_dtype;
};

// An open, validated, memory-mapped file. Tensors loaded from it on the CPU may alias the
// mapping (F32 and other kept dtypes, when aligned), so the mapping lives as long as they do.
class File {
 public:
  static std::shared_ptr<File> open(const std::string& path);
  // The same over a file's bytes held in memory (name is for messages), e.g. received from another rank.
  static std::shared_ptr<File> from_bytes(std::string bytes, const std::string& name);
  ~File();
  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  std::span<const std::byte> bytes(const TensorInfo& t) const;
  // Drops the pages that lie wholly inside t's bytes from memory (madvise DONTNEED), after a caller read
  // them into a copy (quantize on load): reading a large checkpoint then never keeps it all resident. Only
  // for tensors nothing aliases: a later touch reads the file again.
  void release(const TensorInfo& t) const;
  // A tensor over bytes of this mapping (no copy; it keeps the File alive), or an undefined Tensor where
  // d's backend cannot wrap host memory. bytes.size() must be numel(shape) * dtype_size(dtype).
  Tensor alias(std::span<const std::byte> bytes, const Shape& shape, DType dtype, Device d) const;
  std::span<const std::byte> mapping() const { return {map_, size_}; }  // the whole file image
  Tensor load(const TensorInfo& t, const LoadOptions& opt = {}) const;
  Tensor load(std::string_view name, const LoadOptions& opt = {}) const;  // throws when absent

 private:
  File() = default;
  std::string path_;
  std::string owned_;  // from_bytes: the image map_ points into
  const std::byte* map_ = nullptr;
  size_t size_ = 0;
  Header header_;
  std::map<std::string, size_t, std::less<>> index_;
  std::weak_ptr<File> self_;
};

std::map<std::string, Tensor> load_file(const std::string& path, const LoadOptions& opt = {});
std::map<std::string, Tensor> load_bytes(std::string bytes, const std::string& name, const LoadOptions& opt = {});

// A tensor written as its bytes under a dtype the engine does not compute with (bitsandbytes' U8 packed
// codes, I8 rows, the JSON quant state): bytes.size() must equal the shape's element count times the dtype's size.
struct RawTensor {
  StDType dtype = StDType::U8;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

// Writes tensors sorted as the reference does (descending alignment, then name), header padded with
// spaces to 8 bytes, `__metadata__` when given; to a temporary sibling, then renamed over `path`.
// narrow: tensors written in a narrower dtype than they have in memory (I32 -> I16 only, every value
// checked to fit), for formats such as RoSA's int16 CSR indices; I16 tensors load back as I32.
void save_file(const std::map<std::string, Tensor>& tensors, const std::string& path,
               const std::map<std::string, std::string>& metadata = {},
               const std::map<std::string, StDType>& narrow = {}, const std::map<std::string, RawTensor>& raw = {});

// A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir);
  std::vector<std::string> names() const;  // sorted
  bool contains(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;
  Tensor load(std::string_view name, const LoadOptions& opt = {}) const;
  const std::vector<std::shared_ptr<File>>& files() const { return files_; }
  const std::shared_ptr<File>& file_of(std::string_view name) const;  // throws when absent

 private:
  std::vector<std::shared_ptr<File>> files_;
  std::map<std::string, size_t, std::less<>> where_;  // tensor name -> index into files_
};

}  // namespace rf::safetensors
