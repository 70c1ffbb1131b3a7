// safetensors: one negative test per validation rule of the reference reader, the writer's layout,
// round trips for every dtype, zero-copy loads, atomic writes and sharded checkpoints.
#include <fmt/format.h>

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

std::vector<std::byte> image(const std::string& header, size_t data_bytes, uint64_t announced = UINT64_MAX) {
  uint64_t n = announced == UINT64_MAX ? header.size() : announced;
  std::vector<std::byte> b(8 + header.size() + data_bytes, std::byte{0});
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

std::string parse_error(const std::vector<std::byte>& b) {
  try {
    st::parse(b, "t.safetensors");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
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

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("safetensors: every validation rule of the reference reader") {
    const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    CHECK(parse_error(image(ok, 8)).empty());
    auto has = [](const std::string& msg, const char* what) {
      CAPTURE(msg);
      CHECK(msg.starts_with("[safetensors] t.safetensors: "));
      CHECK(msg.find(what) != std::string::npos);
    };
    has(parse_error(std::vector<std::byte>(5)), "header too small");
    has(parse_error(image("{}", 0, 100'000'001)), "header too large");
    has(parse_error(image("{}", 0, 1000)), "invalid header length");
    has(parse_error(image("{\"\xff\":{}}", 0)), "not UTF-8 at byte offset 10");
    has(parse_error(image("[1,2]", 0)), "does not start with '{'");
    has(parse_error(image("{\"a\":", 0)), "invalid header deserialization");
    has(parse_error(image(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8)), "unknown dtype 'F33'");
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8)), "unknown field 'x'");
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)), "non-negative integers");
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8)), "data_offsets must be [begin, end]");
    has(parse_error(image(R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8)),
        "__metadata__ value of 'k' is not a string");
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8)),
        "duplicate tensor name 'a'");
    // Offsets: gap, overlap (the JSON attack: many tensors on one region), out of order is fine once sorted.
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)), "invalid offset: tensor 'a'");
    std::string attack = "{";
    for (int i = 0; i < 10; ++i) attack += fmt::format("{}\"t{}\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", i ? "," : "", i);
    has(parse_error(image(attack + "}", 16)), "invalid offset");
    CHECK(parse_error(image(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8)).empty());
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[2,18446744073709551614],"data_offsets":[0,8]}})", 8)), "validation overflow");
    has(parse_error(image(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", 1)), "misaligned slice");
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)), "tensor invalid info: tensor 'a' (F32 [3]) needs 12 bytes");
    has(parse_error(image(ok, 12)), "4 bytes of trailing data");
    has(parse_error(image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)), "tensors need 16 data bytes but the file holds 8");
    // Allowed: leading whitespace, trailing space padding, empty and 0-d tensors, F4 pairs.
    CHECK(parse_error(image("  \n" + ok + "    ", 8)).empty());
    CHECK(parse_error(image(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})", 8)).empty());
    CHECK(parse_error(image(R"({"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", 2)).empty());
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
    auto bytes = file_bytes(path);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    auto f = st::File::open(path);
    CHECK(f->header().metadata.at("format") == "pt");
    // Reference order: descending alignment, then name.
    std::vector<std::string> order;
    for (auto& t : f->header().tensors) order.push_back(t.name);
    CHECK(order == std::vector<std::string>{"f64", "i64", "empty", "f32", "i32", "scalar", "bf16", "f16", "bool"});
    for (auto& [name, t] : ts) {
      CAPTURE(name);
      st::LoadOptions keep;
      keep.keep_16bit = true;
      Tensor back = f->load(name, keep);
      CHECK(back.dtype() == t.dtype());
      CHECK(back.shape() == t.shape());
      CHECK(back.to_vector<double>() == t.to_vector<double>());
    }
    CHECK(f->load("f16").dtype() == DType::F32);  // converted unless kept
    CHECK(f->load("f16").to_vector<float>() == ts["f16"].to_vector<float>());
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: F32 on the CPU aliases the mapping; writes never reach the file") {
    fs::path d = temp_dir("alias");
    const std::string path = (d / "w.safetensors").string();
    st::save_file({{"w", from_data(std::vector<float>{1, 2, 3, 4}, {4})}}, path);
    auto before = file_bytes(path);
    auto f = st::File::open(path);
    Tensor w = f->load("w");
    const std::byte* p = reinterpret_cast<const std::byte*>(cpu::data<float>(w));
    auto span = f->bytes(*f->find("w"));
    CHECK(p == span.data());  // no copy
    f.reset();                // the tensor keeps the mapping alive
    CHECK(w.to_vector<float>() == std::vector<float>{1, 2, 3, 4});
    w.fill_(9);
    CHECK(w.to_vector<float>() == std::vector<float>{9, 9, 9, 9});
    CHECK(file_bytes(path) == before);
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: loads onto every backend") {
    for_each_backend([](Device dev) {
      fs::path d = temp_dir("dev");
      const std::string path = (d / "m.safetensors").string();
      st::save_file({{"a", from_data(std::vector<float>{1, -2, 3}, {3})}, {"h", from_data(std::vector<float>{0.5f, 2}, {2}).to(DType::BF16)}}, path);
      st::LoadOptions lo;
      lo.device = dev;
      auto all = st::load_file(path, lo);
      CHECK(all.at("a").device() == dev);
      CHECK(all.at("a").to_vector<float>() == std::vector<float>{1, -2, 3});
      CHECK(all.at("h").to_vector<float>() == std::vector<float>{0.5f, 2});
      fs::remove_all(d);
    });
  }

  TEST_CASE("safetensors: the writer is atomic and names its failures") {
    fs::path d = temp_dir("atomic");
    const std::string path = (d / "keep.safetensors").string();
    st::save_file({{"a", ones({2})}}, path);
    auto before = file_bytes(path);
    CHECK_THROWS_WITH(st::save_file({{"__metadata__", ones({2})}}, path),
                      fmt::format("[safetensors] {}: invalid tensor name '__metadata__'", path).c_str());
    CHECK_THROWS_WITH(st::save_file({{"a", ones({2})}}, (d / "no/such/dir/x.safetensors").string()),
                      doctest::Contains("cannot create"));
    CHECK(file_bytes(path) == before);
    size_t files = 0;
    for (auto& e : fs::directory_iterator(d)) files += e.is_regular_file();
    CHECK(files == 1);  // no temporary left behind
    CHECK_THROWS_WITH(st::File::open((d / "missing.safetensors").string()), doctest::Contains("No such file or directory"));
    CHECK_THROWS_WITH(st::File::open(d.string()), doctest::Contains("is a directory"));
    std::ofstream(d / "empty.safetensors").close();
    CHECK_THROWS_WITH(st::File::open((d / "empty.safetensors").string()), doctest::Contains("header too small"));
    fs::remove_all(d);
  }

  TEST_CASE("safetensors: sharded checkpoints through model.safetensors.index.json") {
    fs::path d = temp_dir("shard");
    st::save_file({{"x.a", ones({2})}, {"x.b", zeros({3})}}, (d / "model-00001-of-00002.safetensors").string());
    st::save_file({{"y", full({2, 2}, 7.0)}}, (d / "model-00002-of-00002.safetensors").string());
    auto index = [&](const std::string& map) {
      std::ofstream(d / "model.safetensors.index.json") << R"({"metadata":{"total_size":36},"weight_map":{)" << map << "}}";
    };
    index(R"("x.a":"model-00001-of-00002.safetensors","x.b":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors")");
    auto ck = st::Checkpoint::open(d.string());
    CHECK(ck.names() == std::vector<std::string>{"x.a", "x.b", "y"});
    CHECK(ck.load("y").to_vector<float>() == std::vector<float>{7, 7, 7, 7});
    CHECK(ck.files().size() == 2);
    index(R"("x.a":"model-00001-of-00002.safetensors","x.b":"model-00001-of-00002.safetensors","y":"model-00001-of-00002.safetensors")");
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("tensor 'y' is listed in model-00001-of-00002.safetensors but that shard does not hold it"));
    index(R"("x.a":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors")");
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("tensor 'x.b' in"));
    std::ofstream(d / "model.safetensors.index.json") << "{";
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("invalid JSON"));
    fs::remove(d / "model.safetensors.index.json");
    CHECK_THROWS_WITH(st::Checkpoint::open(d.string()), doctest::Contains("no model.safetensors or model.safetensors.index.json"));
    fs::remove_all(d);
  }
}
