// safetensors: u64 little-endian header size N, N bytes of JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the
// data. Checked by tests/io/safetensors_test.cc.
#include "bnorm/io/safetensors.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "bnorm/data/csv.h"
#include "bnorm/error.h"

namespace bnorm::io {

namespace {

struct Entry {
  std::string dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

struct Parsed {
  std::map<std::string, Entry> entries;
  std::map<std::string, std::string> metadata;
  std::vector<char> data;
};

const char* st_dtype(DType d) { return d == DType::kFloat32 ? "F32" : "F64"; }

std::size_t element_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16") return 2;
  if (dtype == "U8" || dtype == "I8" || dtype == "BOOL") return 1;
  return 0;
}

Parsed parse(const std::string& path, bool with_data) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (size < 8) {
    throw IoError(
        fmt::format("{}: truncated at byte {}: expected an 8-byte header size", path, size));
  }
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > size - 8 || header_len > (uint64_t{100} << 20)) {
    throw IoError(
        fmt::format("{}: byte 0: header size {} exceeds the file ({} bytes): truncated "
                    "or not a safetensors file",
                    path, header_len, size));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::parse_error& e) {
    throw IoError(fmt::format("{}: byte {}: corrupt JSON header: {}", path, 8 + e.byte, e.what()));
  }
  if (!j.is_object()) throw IoError(fmt::format("{}: byte 8: header must be a JSON object", path));
  Parsed p;
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (m->is_string()) p.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    try {
      Entry e;
      e.dtype = it->at("dtype").get<std::string>();
      e.shape = it->at("shape").get<Shape>();
      const auto offs = it->at("data_offsets").get<std::vector<uint64_t>>();
      if (offs.size() != 2) throw std::runtime_error("data_offsets must have 2 entries");
      e.begin = offs[0];
      e.end = offs[1];
      const std::size_t es = element_size(e.dtype);
      if (es == 0) throw std::runtime_error("unknown dtype " + e.dtype);
      uint64_t count = 1;
      for (int64_t d : e.shape) {
        if (d < 0) throw std::runtime_error("negative dimension");
        count *= static_cast<uint64_t>(d);
      }
      if (e.end < e.begin || e.end - e.begin != count * es) {
        throw std::runtime_error(fmt::format("data_offsets [{}, {}] do not match shape {} of {}",
                                             e.begin, e.end, shape_str(e.shape), e.dtype));
      }
      if (e.end > data_size) {
        throw IoError(fmt::format("{}: truncated: tensor '{}' ends at byte {}, the file has {}",
                                  path, it.key(), 8 + header_len + e.end, size));
      }
      p.entries[it.key()] = e;
    } catch (const IoError&) {
      throw;
    } catch (const std::exception& ex) {
      throw IoError(
          fmt::format("{}: byte 8: corrupt header entry '{}': {}", path, it.key(), ex.what()));
    }
  }
  if (with_data) {
    p.data.resize(static_cast<std::size_t>(data_size));
    in.read(p.data.data(), static_cast<std::streamsize>(data_size));
    if (!in) throw IoError(fmt::format("{}: read failed at byte {}", path, 8 + header_len));
  }
  return p;
}

}  // namespace

namespace {
// Writes header + data for (name, dtype, shape, bytes) entries.
struct RawEntry {
  std::string name;
  const char* dtype;
  Shape shape;
  const void* bytes;
  std::size_t n;
};

void write_entries(const std::vector<RawEntry>& entries, const std::string& path,
                   const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const RawEntry& e : entries) {
    header[e.name] = {
        {"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.n}}};
    data.append(static_cast<const char*>(e.bytes), e.n);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h += ' ';  // keep the data 8-byte aligned, as safetensors does
  std::string out(8, '\0');
  const uint64_t len = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out += h;
  out += data;
  data::write_file_atomic(path, out);
}
}  // namespace

void save_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::string& path, const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> keep;
  std::vector<RawEntry> entries;
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.is_contiguous() ? t : t.clone(MemoryFormat::kContiguous));
    entries.push_back(
        {name, st_dtype(t.dtype()), t.shape(), keep.back().raw_data(), keep.back().nbytes()});
  }
  write_entries(entries, path, metadata);
}

std::vector<std::pair<std::string, Tensor>> load_safetensors_tensors(const std::string& path) {
  Parsed p = parse(path, true);
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, e] : p.entries) {
    if (e.dtype != "F32" && e.dtype != "F64") continue;
    Tensor t = Tensor::empty(e.shape, e.dtype == "F32" ? DType::kFloat32 : DType::kFloat64);
    std::memcpy(t.raw_data(), p.data.data() + e.begin, t.nbytes());
    out.emplace_back(name, t);
  }
  return out;
}

void save_safetensors(nn::Module& module, const std::string& path,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, p] : module.named_parameters()) tensors.emplace_back(name, p->value);
  for (auto& [name, t] : module.named_buffers()) tensors.emplace_back(name, *t);
  std::vector<Tensor> keep;
  std::vector<RawEntry> entries;
  keep.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.is_contiguous() ? t : t.clone(MemoryFormat::kContiguous));
    entries.push_back(
        {name, st_dtype(t.dtype()), t.shape(), keep.back().raw_data(), keep.back().nbytes()});
  }
  for (auto& [name, v] : module.named_int_buffers())
    entries.push_back({name, "I64", {}, v, sizeof(int64_t)});
  write_entries(entries, path, metadata);
}

void load_safetensors(nn::Module& module, const std::string& path) {
  Parsed p = parse(path, true);
  std::map<std::string, bool> used;
  // Validate everything first, then copy: nothing changes on error.
  struct Copy {
    void* dst;
    const char* src;
    std::size_t n;
  };
  std::vector<Copy> copies;
  auto expect = [&](const std::string& name, const std::string& dtype,
                    const Shape& shape) -> const Entry& {
    auto it = p.entries.find(name);
    if (it == p.entries.end()) {
      throw IoError(fmt::format("{}: missing key '{}' ({} {}): is it a checkpoint of this model?",
                                path, name, dtype, shape_str(shape)));
    }
    if (it->second.dtype != dtype || it->second.shape != shape) {
      throw IoError(fmt::format("{}: key '{}' must be {} {} for this model, got {} {}", path, name,
                                dtype, shape_str(shape), it->second.dtype,
                                shape_str(it->second.shape)));
    }
    used[name] = true;
    return it->second;
  };
  std::vector<std::pair<std::string, Tensor*>> tensors;
  for (auto& [name, prm] : module.named_parameters()) tensors.emplace_back(name, &prm->value);
  for (auto& [name, t] : module.named_buffers()) tensors.emplace_back(name, t);
  for (auto& [name, t] : tensors) {
    const Entry& e = expect(name, st_dtype(t->dtype()), t->shape());
    if (!t->is_contiguous())
      throw IoError(fmt::format("load_safetensors: '{}' must be contiguous", name));
    copies.push_back({t->raw_data(), p.data.data() + e.begin, t->nbytes()});
  }
  for (auto& [name, v] : module.named_int_buffers()) {
    auto it = p.entries.find(name);
    // PyTorch's version-1 state dicts lack num_batches_tracked: it then stays 0, as PyTorch does.
    if (it == p.entries.end()) continue;
    const Entry& e = expect(name, "I64", {});
    copies.push_back({v, p.data.data() + e.begin, sizeof(int64_t)});
  }
  for (const auto& [name, e] : p.entries) {
    if (!used.count(name)) {
      throw IoError(
          fmt::format("{}: unexpected key '{}' ({} {}): the checkpoint is for another "
                      "architecture",
                      path, name, e.dtype, shape_str(e.shape)));
    }
  }
  for (const Copy& c : copies) std::memcpy(c.dst, c.src, c.n);
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  return parse(path, false).metadata;
}

}  // namespace bnorm::io
