// safetensors: one negative test per validation rule of the reference reader, the writer's layout,
// round trips for every dtype, zero-copy loads, atomic writes, sharded checkpoints and a real file.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "backends/cpu/cpu_backend.h"
#include "engine/safetensors.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;
namespace st = rf::safetensors;

namespace {

using Bytes = std::vector<std::byte>;

// A file image: the 8-byte length (the header's own unless `announced` is given), header, data.
Bytes image(const std::string& header, const Bytes& data, uint64_t announced = UINT64_MAX) {
  uint64_t n = announced == UINT64_MAX ? header.size() : announced;
  Bytes b(8 + header.size());
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}
Bytes image(const std::string& header, size_t zero_bytes, uint64_t announced = UINT64_MAX) {
  return image(header, Bytes(zero_bytes), announced);
}
template <class T>
Bytes raw(const std::vector<T>& v) {
  Bytes b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::string parse_error(const Bytes& b) {
  try {
    st::parse(b, "t.safetensors");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// Checks that parsing fails with one line that names the file and contains `what`.
void rejects(const Bytes& b, const std::string& what) {
  std::string msg = parse_error(b);
  CAPTURE(msg);
  CAPTURE(what);
  CHECK(msg.starts_with("[safetensors] t.safetensors: "));
  CHECK(msg.find(what) != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);
}

fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / fmt::format("rf_st_{}_{}", tag, ::getpid());
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const fs::path& p, const Bytes& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

Bytes tensor_bytes(const Tensor& t) {
  Bytes b(size_t(t.numel()) * dtype_size(t.dtype()));
  Tensor c = t.contiguous();
  c.backend().download(c.buffer(), size_t(c.offset()) * dtype_size(c.dtype()), b);
  return b;
}

bool inside(std::span<const std::byte> outer, const void* p, size_t n) {
  auto* b = static_cast<const std::byte*>(p);
  return b >= outer.data() && b + n <= outer.data() + outer.size();
}

const std::string kOk = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
std::string one(const std::string& entry) { return R"({"a":)" + entry + "}"; }

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("safetensors: the length prefix and the header text") {
    CHECK(parse_error(image(kOk, 8)).empty());
    rejects(Bytes{}, "header too small: the file has 0 bytes");
    rejects(Bytes(7), "header too small");
    rejects(image("{}", 0, st::kMaxHeaderSize + 1), "header too large: 100000001 bytes");
    rejects(image("{}", 0, UINT64_MAX - 4), "header too large");  // 8 + N would overflow
    rejects(image("{}", 0, st::kMaxHeaderSize), "invalid header length");
    rejects(image("{}", 0, 1000), "invalid header length: 1000 header bytes");
    rejects(image("{\"\xff\":{}}", 0), "invalid header: not UTF-8 at byte offset 10");
    rejects(image("{\"\xc0\xaf\":{}}", 0), "not UTF-8");      // overlong '/'
    rejects(image("{\"\xed\xa0\x80\":{}}", 0), "not UTF-8");  // a surrogate
    rejects(image("[1,2]", 0), "does not start with '{'");
    rejects(image("  \n[1]", 0), "does not start with '{' (byte offset 11)");
    rejects(image("        ", 0), "does not start with '{'");
    rejects(image("{\"a\":", 0), "invalid header deserialization");
    rejects(image("{} x", 0), "invalid header deserialization");
    // Leading JSON whitespace and trailing space padding are accepted, as is an empty header.
    CHECK(parse_error(image(" \t\r\n" + kOk + "      ", 8)).empty());
    CHECK(parse_error(image("{}", 0)).empty());
  }

  TEST_CASE("safetensors: the header schema") {
    rejects(image(one(R"({"dtype":"F33","shape":[2],"data_offsets":[0,8]})"), 8), "tensor 'a': unknown dtype 'F33'");
    rejects(image(one(R"({"dtype":32,"shape":[2],"data_offsets":[0,8]})"), 8), "dtype is not a string");
    rejects(image(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})"), 8),
            "tensor 'a': unknown field 'x'");
    rejects(image(one(R"({"dtype":"F32","shape":[2]})"), 0), "needs dtype, shape and data_offsets");
    rejects(image(one("[1]"), 0), "entry is not an object");
    rejects(image(one(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), 8), "shape is not a list");
    rejects(image(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), 8),
            "shape must hold non-negative integers");
    rejects(image(one(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), 8), "non-negative integers");
    rejects(image(one(R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"), 8), "non-negative integers");
    rejects(image(one(R"({"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]})"), 8),
            "non-negative integers");
    rejects(image(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), 8), "data_offsets must be [begin, end]");
    rejects(image(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"), 8),
            "data_offsets must be [begin, end]");
    rejects(image(one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), 8),
            "data_offsets must hold non-negative");
    rejects(image(R"({"__metadata__":{"k":1},)" + kOk.substr(1), 8), "__metadata__ value of 'k' is not a string");
    rejects(image(R"({"__metadata__":["k"],)" + kOk.substr(1), 8), "__metadata__ must map strings to strings");
    // Duplicates: nlohmann would silently keep one of them.
    rejects(
        image(
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
            8),
        "duplicate tensor name 'a'");
    rejects(image(one(R"({"dtype":"F32","shape":[2],"dtype":"F32","data_offsets":[0,8]})"), 8),
            "duplicate key 'dtype' in 'a'");
    rejects(image(R"({"__metadata__":{"k":"x","k":"y"},)" + kOk.substr(1), 8), "duplicate key 'k' in '__metadata__'");
    // Names in messages are escaped, so a hostile name cannot break the one-line rule.
    rejects(image(R"({"a\nb":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "tensor 'a\\x0ab'");
    CHECK(parse_error(image(R"({"__metadata__":{"format":"pt","k":""},)" + kOk.substr(1), 8)).empty());
  }

  TEST_CASE("safetensors: data offsets, sizes and the buffer length") {
    rejects(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "invalid offset: tensor 'a'");
    rejects(image(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8), "invalid offset: tensor 'a'");
    rejects(
        image(
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            12),
        "invalid offset: tensor 'b'");
    // The JSON attack: many tensors claiming one region.
    std::string attack = "{";
    for (int i = 0; i < 10; ++i)
      attack += fmt::format("{}\"t{}\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", i ? "," : "", i);
    rejects(image(attack + "}", 16), "invalid offset: tensor 't1'");
    rejects(image(one(R"({"dtype":"F32","shape":[2,18446744073709551614],"data_offsets":[0,8]})"), 8),
            "validation overflow: the shape of tensor 'a'");
    rejects(image(one(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]})"), 8),
            "validation overflow: the byte size of tensor 'a'");
    rejects(image(one(R"({"dtype":"F4","shape":[3],"data_offsets":[0,1]})"), 1), "misaligned slice: tensor 'a'");
    rejects(image(one(R"({"dtype":"F6_E2M3","shape":[3],"data_offsets":[0,2]})"), 2), "misaligned slice");
    rejects(image(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), 8),
            "tensor invalid info: tensor 'a' (F32 [3]) needs 12 bytes but data_offsets span 8");
    rejects(image(kOk, 12), "incomplete buffer: 4 bytes of trailing data");
    rejects(image(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), 8),
            "tensors need 16 data bytes but the file holds 8");
    // Allowed: out-of-order entries, empty tensors (also as the only data), 0-d scalars, packed F4.
    CHECK(
        parse_error(
            image(
                R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                8))
            .empty());
    CHECK(
        parse_error(
            image(
                R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})",
                8))
            .empty());
    CHECK(parse_error(image(one(R"({"dtype":"BF16","shape":[3,0],"data_offsets":[0,0]})"), 0)).empty());
    CHECK(parse_error(image(one(R"({"dtype":"F4","shape":[4],"data_offsets":[0,2]})"), 2)).empty());
    auto h = st::parse(
        image(
            R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
            8),
        "x");
    REQUIRE(h.tensors.size() == 2);
    CHECK(h.tensors[0].name == "a");  // file order
    CHECK(h.tensors[0].shape.empty());
    CHECK(h.data_start() == 8 + h.header_size);
  }

  TEST_CASE("safetensors: write -> read round trip for every dtype, empty and 0-d tensors") {
    fs::path d = temp_dir("rt");
    std::map<std::string, Tensor> ts;
    ts["f32"] = from_data(std::vector<float>{1.5f, -2.25f, 3e-38f, 7}, {2, 2});
    ts["f64"] = from_data(std::vector<double>{1e-300, -0.1}, {2});
    ts["f16"] = ts["f32"].to(DType::F16);
    ts["bf16"] = ts["f32"].to(DType::BF16);
    ts["i32"] = from_data(std::vector<int32_t>{-7, 1 << 30}, {1, 2});
    ts["i64"] = from_data(std::vector<int64_t>{-(int64_t(1) << 62), 5, 6}, {3});
    ts["bool"] = bools({1, 0, 1}, {3});
    ts["empty"] = zeros({0, 3});
    ts["scalar"] = from_data(std::vector<float>{4.5f}, {});
    const std::string path = (d / "x.safetensors").string();
    st::save_file(ts, path, {{"format", "pt"}});
    // Layout: 8-byte aligned header, __metadata__ first, space padding, the reference's tensor order.
    auto bytes = file_bytes(path);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    std::string header(bytes.data() + 8, n);
    CHECK(header.starts_with(R"({"__metadata__":{"format":"pt"},"f64":{)"));
    CHECK(header.substr(header.find_last_of('}') + 1).find_first_not_of(' ') == std::string::npos);
    auto f = st::File::open(path);
    CHECK(f->header().metadata == std::map<std::string, std::string>{{"format", "pt"}});
    std::vector<std::string> order;
    for (auto& t : f->header().tensors) order.push_back(t.name);
    CHECK(order == std::vector<std::string>{"f64", "i64", "empty", "f32", "i32", "scalar", "bf16", "f16", "bool"});
    CHECK(f->mapping().size() == bytes.size());
    for (auto& [name, t] : ts) {
      CAPTURE(name);
      const st::TensorInfo* info = f->find(name);
      REQUIRE(info != nullptr);
      CHECK(info->dtype == st::from_rf(t.dtype()));
      CHECK(Bytes(f->bytes(*info).begin(), f->bytes(*info).end()) == tensor_bytes(t));  // exact bytes
      st::LoadOptions keep;
      keep.keep_16bit = true;
      Tensor back = f->load(name, keep);
      CHECK(back.dtype() == t.dtype());
      CHECK(back.shape() == t.shape());
      CHECK(tensor_bytes(back) == tensor_bytes(t));
    }
    CHECK(f->load("scalar").item() == 4.5);
    CHECK(f->load("empty").numel() == 0);
    CHECK(f->find("nope") == nullptr);
    CHECK_THROWS_WITH(f->load("nope"), doctest::Contains("no tensor named 'nope'"));
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: F16 and BF16 widen to F32 exactly unless kept") {
    fs::path d = temp_dir("half");
    const std::string path = (d / "h.safetensors").string();
    // 1, -2, 1/3 rounded, +inf, the smallest subnormal; and 1, -3, +inf in bf16.
    const std::vector<uint16_t> h16{0x3C00, 0xC000, 0x3555, 0x7C00, 0x0001}, b16{0x3F80, 0xC040, 0x7F80};
    Bytes data = raw(h16);
    Bytes b = raw(b16);
    data.insert(data.end(), b.begin(), b.end());
    std::string header =
        R"({"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[10,16]}})";
    header.append((8 - header.size() % 8) % 8, ' ');  // aligned data, so the kept load can alias
    write_file(path, image(header, data));
    auto f = st::File::open(path);
    Tensor h = f->load("h"), bf = f->load("b");
    CHECK(h.dtype() == DType::F32);
    CHECK(h.to_vector<float>() == std::vector<float>{1.0f, -2.0f, 0.333251953125f, INFINITY, std::ldexp(1.0f, -24)});
    CHECK(bf.to_vector<float>() == std::vector<float>{1.0f, -3.0f, INFINITY});
    st::LoadOptions keep;
    keep.keep_16bit = true;
    Tensor hk = f->load("h", keep);
    CHECK(hk.dtype() == DType::F16);
    CHECK(tensor_bytes(hk) == raw(h16));
    CHECK(inside(f->mapping(), cpu::data<uint16_t>(hk), 10));  // kept 16-bit aliases too
    CHECK(f->load("b", keep).dtype() == DType::BF16);
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: F32 on the CPU aliases the mapping; writes never reach the file") {
    fs::path d = temp_dir("alias");
    const std::string path = (d / "w.safetensors").string();
    st::save_file({{"w", from_data(std::vector<float>{1, 2, 3, 4}, {4})}, {"i", i64({7, 8}, {2})}}, path);
    auto before = file_bytes(path);
    auto f = st::File::open(path);
    Tensor w = f->load("w"), i = f->load("i");
    CHECK(inside(f->mapping(), cpu::data<float>(w), 16));  // no copy
    CHECK(static_cast<const void*>(cpu::data<float>(w)) == f->bytes(*f->find("w")).data());
    CHECK(inside(f->mapping(), cpu::data<int64_t>(i), 16));
    f.reset();  // the tensors keep the mapping alive
    CHECK(w.to_vector<float>() == std::vector<float>{1, 2, 3, 4});
    w.fill_(1);
    i.fill_(0);
    CHECK(w.to_vector<float>() == std::vector<float>{1, 1, 1, 1});
    CHECK(file_bytes(path) == before);  // MAP_PRIVATE: copy on write
    CHECK(st::File::open(path)->load("w").to_vector<float>() == std::vector<float>{1, 2, 3, 4});
    // A header whose length leaves the data misaligned for F32: the load copies instead.
    std::string h = kOk;
    while ((8 + h.size()) % 4 != 2) h += ' ';
    write_file(d / "odd.safetensors", image(h, raw(std::vector<float>{5, 6})));
    auto odd = st::File::open((d / "odd.safetensors").string());
    Tensor a = odd->load("a");
    CHECK(!inside(odd->mapping(), cpu::data<float>(a), 8));
    CHECK(a.to_vector<float>() == std::vector<float>{5, 6});
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: loads refuse what rankforge cannot hold") {
    fs::path d = temp_dir("refuse");
    const std::string path = (d / "r.safetensors").string();
    write_file(
        path,
        image(
            R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},"u":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},)"
            R"("e":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[5,5]}})",
            Bytes{std::byte{0}, std::byte{1}, std::byte{2}, std::byte{9}, std::byte{9}}));
    auto f = st::File::open(path);  // valid safetensors all the same
    CHECK_THROWS_WITH(
        f->load("m"),
        fmt::format("[safetensors] {}: tensor 'm': BOOL byte 2 at element 2 is neither 0 nor 1", path).c_str());
    CHECK_THROWS_WITH(f->load("u"),
                      fmt::format("[safetensors] {}: tensor 'u': dtype U8 is not supported", path).c_str());
    CHECK_THROWS_WITH(f->load("e"), doctest::Contains("tensor 'e': shape 0x9223372036854775808 is too large"));
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: loads onto every backend") {
    for_each_backend([](Device dev) {
      fs::path d = temp_dir("dev");
      const std::string path = (d / "m.safetensors").string();
      st::save_file({{"a", from_data(std::vector<float>{1, -2, 3}, {3})},
                     {"h", from_data(std::vector<float>{0.5f, 2}, {2}).to(DType::BF16)},
                     {"i", i64({-1, 1LL << 40}, {2})},
                     {"m", bools({0, 1}, {2})},
                     {"s", from_data(std::vector<float>{2.5f}, {})},
                     {"e", zeros({0, 3})}},
                    path);
      st::LoadOptions lo;
      lo.device = dev;
      auto all = st::load_file(path, lo);
      for (auto& [name, t] : all) CHECK(t.device() == dev);
      CHECK(all.at("a").to_vector<float>() == std::vector<float>{1, -2, 3});
      CHECK(all.at("h").dtype() == DType::F32);
      CHECK(all.at("h").to_vector<float>() == std::vector<float>{0.5f, 2});
      CHECK(all.at("i").to_vector<int64_t>() == std::vector<int64_t>{-1, 1LL << 40});
      CHECK(all.at("m").to_vector<int64_t>() == std::vector<int64_t>{0, 1});
      CHECK(all.at("s").shape().empty());
      CHECK(all.at("s").item() == 2.5);
      CHECK(all.at("e").shape() == Shape{0, 3});
      lo.keep_16bit = true;
      auto f = st::File::open(path);
      Tensor h = f->load("h", lo);
      CHECK(h.dtype() == DType::BF16);
      CHECK(h.device() == dev);
      CHECK(h.to_vector<float>() == std::vector<float>{0.5f, 2});
      fs::remove_all(d);
    });
  }

  TEST_CASE("safetensors: the writer is atomic and names its failures") {
    fs::path d = temp_dir("atomic");
    const std::string path = (d / "keep.safetensors").string();
    st::save_file({{"a", ones({2})}}, path);
    auto before = file_bytes(path);
    CHECK_THROWS_WITH(st::save_file({{"b", ones({3})}, {"__metadata__", ones({2})}}, path),
                      fmt::format("[safetensors] {}: invalid tensor name '__metadata__'", path).c_str());
    CHECK_THROWS_WITH(st::save_file({{"", ones({2})}}, path), doctest::Contains("invalid tensor name ''"));
    CHECK_THROWS_WITH(st::save_file({{"\xff", ones({2})}}, path), doctest::Contains("invalid tensor name"));
    CHECK_THROWS_WITH(st::save_file({{"a", ones({2})}}, path, {{"k", "\xc3"}}),
                      doctest::Contains("__metadata__ entry 'k' is not UTF-8"));
    CHECK_THROWS_WITH(st::save_file({{"a", ones({2})}}, (d / "no/such/dir/x.safetensors").string()),
                      doctest::Contains("cannot create"));
    fs::create_directories(d / "sub.safetensors" / "x");  // renaming a file over a directory fails
    CHECK_THROWS_WITH(st::save_file({{"a", ones({2})}}, (d / "sub.safetensors").string()),
                      doctest::Contains("cannot rename"));
    CHECK(file_bytes(path) == before);
    size_t files = 0;
    for (auto& e : fs::directory_iterator(d)) files += e.is_regular_file();
    CHECK(files == 1);  // no temporary left behind
    // Overwriting works, and a non-contiguous view is written in logical order.
    st::save_file({{"t", from_data(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3}).t()}}, path);
    Tensor t = st::load_file(path).at("t");
    CHECK(t.shape() == Shape{3, 2});
    CHECK(t.to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
    CHECK_THROWS_WITH(st::File::open((d / "missing.safetensors").string()),
                      doctest::Contains("No such file or directory"));
    CHECK_THROWS_WITH(st::File::open(d.string()), fmt::format("[safetensors] {}: Is a directory", d.string()).c_str());
    std::ofstream(d / "empty.safetensors").close();
    CHECK_THROWS_WITH(st::File::open((d / "empty.safetensors").string()), doctest::Contains("header too small"));
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: sharded checkpoints through model.safetensors.index.json") {
    fs::path d = temp_dir("shard");
    const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
    st::save_file({{"x.a", ones({2})}, {"x.b", zeros({3})}}, (d / s1).string());
    st::save_file({{"y", full({2, 2}, 7.0)}}, (d / s2).string());
    auto index = [&](const std::string& map) {
      std::ofstream(d / "model.safetensors.index.json")
          << R"({"metadata":{"total_size":36},"weight_map":{)" << map << "}}";
    };
    auto entry = [](const std::string& t, const std::string& s) { return fmt::format("\"{}\":\"{}\"", t, s); };
    index(entry("x.a", s1) + "," + entry("x.b", s1) + "," + entry("y", s2));
    auto ck = st::Checkpoint::open(d.string());
    CHECK(ck.names() == std::vector<std::string>{"x.a", "x.b", "y"});
    CHECK(ck.contains("y"));
    CHECK(!ck.contains("z"));
    CHECK(ck.info("x.b").shape == std::vector<uint64_t>{3});
    CHECK(ck.load("y").to_vector<float>() == std::vector<float>{7, 7, 7, 7});
    CHECK(ck.files().size() == 2);
    CHECK_THROWS_WITH(ck.load("z"), doctest::Contains("no tensor named 'z'"));
    index(entry("x.a", s1) + "," + entry("x.b", s1) + "," + entry("y", s1));
    CHECK_THROWS_WITH(
        st::Checkpoint::open(d.string()),
        doctest::Contains(("tensor 'y' is listed in " + s1 + " but that shard does not hold it").c_str()));
    index(entry("x.a", s1) + "," + entry("y", s2));
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("tensor 'x.b' in"));
    index(entry("x.a", s1) + "," + entry("x.b", s1) + "," + entry("y", s2) + "," + entry("y", s1));
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("duplicate key 'y'"));
    index(entry("x.a", "../" + s1));
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("must be a file name in the same directory"));
    index(entry("x.a", "model-00003.safetensors"));
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()),
                      doctest::Contains("model-00003.safetensors: No such file or directory"));
    // The same tensor in two shards, both listed.
    st::save_file({{"y", ones({1})}, {"z", ones({1})}}, (d / "extra.safetensors").string());
    index(entry("x.a", s1) + "," + entry("x.b", s1) + "," + entry("y", s2) + "," + entry("z", "extra.safetensors"));
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("tensor 'y' appears in two shards"));
    std::ofstream(d / "model.safetensors.index.json") << "{";
    const std::string ix = (d / "model.safetensors.index.json").string();
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()),
                      doctest::Contains(fmt::format("[safetensors] {}: invalid JSON", ix).c_str()));
    std::ofstream(d / "model.safetensors.index.json") << R"({"weight_map":[]})";
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("no 'weight_map' object"));
    fs::remove(d / "model.safetensors.index.json");
    CHECK_THROWS_WITH(
        st::Checkpoint::open(d.string()),
        fmt::format("[safetensors] {0}: no model.safetensors or model.safetensors.index.json in {0}", d.string())
            .c_str());
    CHECK(st::Checkpoint::open((d / s2).string()).names() == std::vector<std::string>{"y"});  // a file alone
    fs::rename(d / s2, d / "model.safetensors");
    CHECK(st::Checkpoint::open(d.string()).names() == std::vector<std::string>{"y"});
    CHECK_THROWS_WITH(st::Checkpoint::open((d / "nope").string()), doctest::Contains("No such file or directory"));
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: the gpt2 fixture loads with its shapes and metadata") {
    const char* fixtures = std::getenv("RF_FIXTURES");
    REQUIRE(fixtures != nullptr);
    const std::string path = (fs::path(fixtures) / "hf/gpt2/base/model.safetensors").string();
    auto f = st::File::open(path);
    CHECK(f->header().tensors.size() == 28);
    CHECK(f->header().metadata.at("format") == "pt");
    CHECK(f->header().header_size % 8 == 0);
    CHECK(f->find("transformer.wte.weight")->shape == std::vector<uint64_t>{300, 48});
    CHECK(f->find("transformer.h.0.attn.c_attn.weight")->shape == std::vector<uint64_t>{48, 144});
    uint64_t params = 0;
    for (const auto& t : f->header().tensors) params += (t.end - t.begin) / 4;
    CHECK(params == 72576);
    Tensor wte = f->load("transformer.wte.weight");
    CHECK(wte.shape() == Shape{300, 48});
    CHECK(inside(f->mapping(), cpu::data<float>(wte), 300 * 48 * 4));
    auto span = f->bytes(*f->find("transformer.wte.weight"));
    CHECK(tensor_bytes(wte) == Bytes(span.begin(), span.end()));
    auto ck = st::Checkpoint::open(fs::path(path).parent_path().string());
    CHECK(ck.names().size() == 28);
    CHECK(ck.load("transformer.ln_f.weight").shape() == Shape{48});
  }
}
