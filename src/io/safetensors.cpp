#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace skiff {
namespace {

using Json = nlohmann::json;

// Shapes beyond this many elements cannot be real (and keep every product below 2^63).
constexpr uint64_t kMaxElements = uint64_t{1} << 50;

struct DTypeName {
  const char* name;
  size_t size;
  std::optional<DType> type;
};

constexpr DTypeName kDTypes[] = {
    {"F64", 8, std::nullopt}, {"F32", 4, DType::F32},      {"F16", 2, DType::F16},
    {"BF16", 2, DType::BF16}, {"I64", 8, std::nullopt},    {"I32", 4, std::nullopt},
    {"I16", 2, std::nullopt}, {"I8", 1, std::nullopt},     {"U64", 8, std::nullopt},
    {"U32", 4, std::nullopt}, {"U16", 2, std::nullopt},    {"U8", 1, std::nullopt},
    {"BOOL", 1, std::nullopt}, {"F8_E4M3", 1, std::nullopt}, {"F8_E5M2", 1, std::nullopt},
};

const DTypeName* find_dtype(const std::string& name) {
  for (const DTypeName& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

// A JSON value as a non-negative integer, or nullopt (floats, negatives, other types).
std::optional<uint64_t> as_count(const Json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

// Parses the header JSON, refusing duplicate keys (the format has no meaning for them, and
// nlohmann would silently keep the last) and nesting deeper than the format uses (so a hostile
// header cannot make the parser recurse deeply).
Json parse_header(const std::string& path, const char* begin, const char* end) {
  std::set<std::string> names, fields;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= 3)
      fail("{}: safetensors header: JSON nested deeper than the format allows", path);
    if (event == E::object_start && depth == 1) fields.clear();
    if (event == E::key && depth == 1 && !names.insert(parsed.get<std::string>()).second)
      fail("{}: safetensors header: duplicate entry '{}'", path, parsed.get<std::string>());
    if (event == E::key && depth == 2 && !fields.insert(parsed.get<std::string>()).second)
      fail("{}: safetensors header: duplicate field '{}'", path, parsed.get<std::string>());
    return true;
  };
  try {
    return Json::parse(begin, end, callback);
  } catch (const Json::exception& e) {
    // nlohmann's message: "[json.exception.parse_error.101] parse error at line 1, column 7: ..."
    std::string what = e.what();
    if (size_t p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    std::replace(what.begin(), what.end(), '\n', ' ');
    fail("{}: safetensors header is not valid JSON: {}", path, what);
  }
}

SafetensorsTensor parse_entry(const std::string& path, const std::string& name, const Json& entry,
                              uint64_t data_size) {
  auto bad = [&](const std::string& why) { fail("{}: tensor {}: {}", path, name, why); };
  if (!entry.is_object()) bad("entry is not a JSON object");
  SafetensorsTensor t;
  t.name = name;

  auto dtype = entry.find("dtype");
  if (dtype == entry.end()) bad("missing field dtype");
  if (!dtype->is_string()) bad("field dtype is not a string");
  t.dtype = dtype->get<std::string>();
  const DTypeName* d = find_dtype(t.dtype);
  if (d == nullptr) bad(fmt::format("unknown dtype '{}'", t.dtype));
  t.type = d->type;

  auto shape = entry.find("shape");
  if (shape == entry.end()) bad("missing field shape");
  if (!shape->is_array()) bad("field shape is not an array");
  if (shape->size() > 8) bad(fmt::format("shape has {} dims (at most 8)", shape->size()));
  uint64_t count = 1;
  for (const Json& dim : *shape) {
    std::optional<uint64_t> n = as_count(dim);
    if (!n) bad(fmt::format("shape {}: dim {} is not a non-negative integer", shape->dump(), dim.dump()));
    if (*n > kMaxElements || (*n != 0 && count > kMaxElements / *n))
      bad(fmt::format("shape {} has too many elements", shape->dump()));
    count *= *n;
    t.shape.push_back(static_cast<int64_t>(*n));
  }

  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end()) bad("missing field data_offsets");
  if (!offsets->is_array() || offsets->size() != 2) bad("field data_offsets is not an array [begin, end]");
  std::optional<uint64_t> begin = as_count((*offsets)[0]), end = as_count((*offsets)[1]);
  if (!begin || !end) bad(fmt::format("data_offsets {} are not non-negative integers", offsets->dump()));
  if (*begin > *end) bad(fmt::format("data_offsets {}: begin after end", offsets->dump()));
  t.begin = *begin;
  t.end = *end;
  if (t.end > data_size)
    bad(fmt::format("data_offsets {} run past the end of the data section ({} bytes)", offsets->dump(),
                    data_size));
  if (count * d->size != t.end - t.begin)
    bad(fmt::format("dtype {} and shape {} make {} bytes, but data_offsets {} hold {}", t.dtype,
                    shape->dump(), count * d->size, offsets->dump(), t.end - t.begin));
  return t;
}

}  // namespace

int64_t SafetensorsTensor::element_count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::optional<size_t> safetensors_dtype_size(const std::string& dtype) {
  const DTypeName* d = find_dtype(dtype);
  if (d == nullptr) return std::nullopt;
  return d->size;
}

SafetensorsFile SafetensorsFile::parse(std::shared_ptr<MappedFile> file) {
  SafetensorsFile st;
  st.file_ = std::move(file);
  const std::string& path = st.file_->name();
  const uint64_t size = st.file_->size();
  if (size < 8) fail("{}: file is {} bytes, too short for the safetensors header length", path, size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | st.file_->data()[i];
  if (header_len > kMaxHeaderBytes)
    fail("{}: safetensors header length {} is larger than the {} MiB limit", path, header_len,
         kMaxHeaderBytes >> 20);
  if (header_len > size - 8)
    fail("{}: safetensors header length {} runs past the end of the file ({} bytes)", path, header_len,
         size);
  if (header_len == 0) fail("{}: safetensors header length is 0", path);
  st.data_offset_ = 8 + header_len;
  const uint64_t data_size = size - st.data_offset_;

  const char* text = reinterpret_cast<const char*>(st.file_->data() + 8);
  const Json header = parse_header(path, text, text + header_len);
  if (!header.is_object()) fail("{}: safetensors header is not a JSON object", path);

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: safetensors __metadata__ is not a JSON object", path);
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail("{}: safetensors __metadata__ value of '{}' is not a string", path, key);
        st.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (name.empty()) fail("{}: safetensors header has a tensor with an empty name", path);
    st.tensors_.push_back(parse_entry(path, name, entry, data_size));
  }

  // The tensors must tile the data section: sorted by offset, each starts where the last ended.
  std::sort(st.tensors_.begin(), st.tensors_.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  const SafetensorsTensor* previous = nullptr;
  for (const SafetensorsTensor& t : st.tensors_) {
    if (t.begin < at)
      fail("{}: tensor {} (bytes [{}, {})) overlaps tensor {} (bytes [{}, {}))", path, t.name, t.begin, t.end,
           previous->name, previous->begin, previous->end);
    if (t.begin > at)
      fail("{}: tensor {} starts at byte {} of the data section, leaving bytes [{}, {}) unused", path, t.name,
           t.begin, at, t.begin);
    at = t.end;
    previous = &t;
  }
  if (at != data_size)
    fail("{}: the data section is {} bytes but its tensors end at byte {} ({} bytes unaccounted for)", path,
         data_size, at, data_size - at);

  for (size_t i = 0; i < st.tensors_.size(); ++i) {
    SafetensorsTensor& t = st.tensors_[i];
    t.data = st.file_->data() + st.data_offset_ + t.begin;
    st.index_[t.name] = i;
  }
  return st;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace skiff
