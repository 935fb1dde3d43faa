// GGUF v2/v3 reader and v3 writer. The reader trusts nothing: every length and count is
// checked against the bytes that remain before anything is allocated, so a corrupt or hostile
// file fails fast with an Error naming the byte offset, and never reads outside the mapping.
#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "base/error.h"

namespace skiff {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;         // ggml's GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;      // arrays of arrays deeper than this are refused
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;
const char* const kAlignmentKey = "general.alignment";

// The smallest encoding of a value of each type: lets a count be checked against the bytes
// left before anything is allocated for it.
size_t min_encoded_size(GgufType type) {
  switch (type) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL:
      return 1;
    case GgufType::UINT16:
    case GgufType::INT16:
      return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32:
      return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64:
      return 8;
    case GgufType::STRING:
      return 8;  // u64 length
    case GgufType::ARRAY:
      return 12;  // u32 element type + u64 count
  }
  return 1;
}

bool is_valid_type(uint32_t type) { return type <= static_cast<uint32_t>(GgufType::FLOAT64); }

const char* type_name(GgufType type) {
  switch (type) {
    case GgufType::UINT8:
      return "uint8";
    case GgufType::INT8:
      return "int8";
    case GgufType::UINT16:
      return "uint16";
    case GgufType::INT16:
      return "int16";
    case GgufType::UINT32:
      return "uint32";
    case GgufType::INT32:
      return "int32";
    case GgufType::FLOAT32:
      return "float32";
    case GgufType::BOOL:
      return "bool";
    case GgufType::STRING:
      return "string";
    case GgufType::ARRAY:
      return "array";
    case GgufType::UINT64:
      return "uint64";
    case GgufType::INT64:
      return "int64";
    case GgufType::FLOAT64:
      return "float64";
  }
  return "unknown";
}

bool is_unsigned(GgufType t) {
  return t == GgufType::UINT8 || t == GgufType::UINT16 || t == GgufType::UINT32 ||
         t == GgufType::UINT64;
}
bool is_signed(GgufType t) {
  return t == GgufType::INT8 || t == GgufType::INT16 || t == GgufType::INT32 ||
         t == GgufType::INT64;
}

// Names from the file go into one-line messages: escape what is not printable, cap the length.
std::string printable(std::string_view s, size_t max_chars = 80) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);  // UTF-8 passes through
    }
  }
  return out;
}

// Bounds-checked little-endian cursor over the mapped bytes.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename... Args>
  [[noreturn]] void fail_at(size_t offset, fmt::format_string<Args...> format,
                            Args&&... args) const {
    fail("{}: byte {}: {}", path_, offset, fmt::format(format, std::forward<Args>(args)...));
  }

  void need(size_t n, const char* what) const {
    if (n > remaining()) {
      fail_at(pos_, "file ends inside {} ({} bytes needed, {} left)", what, n, remaining());
    }
  }

  uint64_t read_le(size_t n, const char* what) {
    need(n, what);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{data_[pos_ + i]} << (8 * i);
    pos_ += n;
    return v;
  }
  uint32_t u32(const char* what) { return static_cast<uint32_t>(read_le(4, what)); }
  uint64_t u64(const char* what) { return read_le(8, what); }

  std::string string(const char* what) {
    const size_t at = pos_;
    const uint64_t length = u64(what);
    if (length > remaining()) {
      fail_at(at, "{} length {} runs past the end of the file ({} bytes left)", what, length,
              remaining());
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(length));
    pos_ += static_cast<size_t>(length);
    return s;
  }

  // A count of items, each at least `min_size` bytes: refused unless they could all fit.
  uint64_t count(const char* what, size_t min_size) {
    const size_t at = pos_;
    const uint64_t n = u64(what);
    if (n > remaining() / min_size) {
      fail_at(at, "{} {} cannot fit in the remaining {} bytes", what, n, remaining());
    }
    return n;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

GgufType read_type(Reader& r, const std::string& key, const char* what) {
  const size_t at = r.pos();
  const uint32_t type = r.u32(what);
  if (!is_valid_type(type)) {
    r.fail_at(at, "metadata key \"{}\" has unknown {} {}", printable(key), what, type);
  }
  return static_cast<GgufType>(type);
}

GgufValue read_value(Reader& r, GgufType type, const std::string& key, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::UINT8:
      v.value = r.read_le(1, "a uint8 value");
      break;
    case GgufType::UINT16:
      v.value = r.read_le(2, "a uint16 value");
      break;
    case GgufType::UINT32:
      v.value = r.read_le(4, "a uint32 value");
      break;
    case GgufType::UINT64:
      v.value = r.read_le(8, "a uint64 value");
      break;
    case GgufType::INT8:
      v.value = int64_t{static_cast<int8_t>(r.read_le(1, "an int8 value"))};
      break;
    case GgufType::INT16:
      v.value = int64_t{static_cast<int16_t>(r.read_le(2, "an int16 value"))};
      break;
    case GgufType::INT32:
      v.value = int64_t{static_cast<int32_t>(r.read_le(4, "an int32 value"))};
      break;
    case GgufType::INT64:
      v.value = static_cast<int64_t>(r.read_le(8, "an int64 value"));
      break;
    case GgufType::FLOAT32:
      v.value = double{std::bit_cast<float>(static_cast<uint32_t>(r.read_le(4, "a float32")))};
      break;
    case GgufType::FLOAT64:
      v.value = std::bit_cast<double>(r.read_le(8, "a float64"));
      break;
    case GgufType::BOOL: {
      const size_t at = r.pos();
      const uint64_t b = r.read_le(1, "a bool value");
      if (b > 1) {
        r.fail_at(at, "metadata key \"{}\": bool value {} is not 0 or 1", printable(key), b);
      }
      v.value = b == 1;
      break;
    }
    case GgufType::STRING:
      v.value = r.string("string value");
      break;
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayNesting) {
        r.fail_at(r.pos(), "metadata key \"{}\": arrays nested deeper than {}", printable(key),
                  kMaxArrayNesting);
      }
      v.array_type = read_type(r, key, "array element type");
      const uint64_t n = r.count("array length", min_encoded_size(v.array_type));
      std::vector<GgufValue> items;
      items.reserve(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i) items.push_back(read_value(r, v.array_type, key, depth + 1));
      v.value = std::move(items);
      break;
    }
  }
  return v;
}

uint64_t align_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) & ~(alignment - 1);  // callers keep x + alignment in range
}

}  // namespace

// ---- GgufValue ------------------------------------------------------------------------------

bool GgufValue::is_integer() const { return is_unsigned(type) || is_signed(type); }

bool GgufValue::is_number() const {
  return is_integer() || type == GgufType::FLOAT32 || type == GgufType::FLOAT64;
}

int64_t GgufValue::as_int(const std::string& what) const {
  if (const auto* u = std::get_if<uint64_t>(&value); u && is_integer()) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail("{}: value {} is out of range", what, *u);
    }
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&value); i && is_integer()) return *i;
  fail("{}: expected an integer, found {}", what, type_name(type));
}

double GgufValue::as_double(const std::string& what) const {
  if (!is_number()) fail("{}: expected a number, found {}", what, type_name(type));
  if (const auto* d = std::get_if<double>(&value)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&value)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&value)) return static_cast<double>(*i);
  fail("{}: {} value holds no number", what, type_name(type));
}

bool GgufValue::as_bool(const std::string& what) const {
  const auto* b = std::get_if<bool>(&value);
  if (type != GgufType::BOOL || b == nullptr) {
    fail("{}: expected a bool, found {}", what, type_name(type));
  }
  return *b;
}

const std::string& GgufValue::as_string(const std::string& what) const {
  const auto* s = std::get_if<std::string>(&value);
  if (type != GgufType::STRING || s == nullptr) {
    fail("{}: expected a string, found {}", what, type_name(type));
  }
  return *s;
}

const std::vector<GgufValue>& GgufValue::as_array(const std::string& what) const {
  const auto* a = std::get_if<std::vector<GgufValue>>(&value);
  if (type != GgufType::ARRAY || a == nullptr) {
    fail("{}: expected an array, found {}", what, type_name(type));
  }
  return *a;
}

// Strings longer than this are cut in the display (chat templates run to kilobytes).
constexpr size_t kMaxDisplayedStringChars = 256;

std::string GgufValue::to_display_string(size_t max_array_items) const {
  return std::visit(
      [&](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          std::string out = "\"";
          out += printable(v, kMaxDisplayedStringChars);
          out += '"';
          if (v.size() > kMaxDisplayedStringChars) out += fmt::format(" ({} bytes)", v.size());
          return out;
        } else if constexpr (std::is_same_v<T, std::vector<GgufValue>>) {
          std::string out = "[";
          for (size_t i = 0; i < v.size() && i < max_array_items; ++i) {
            if (i > 0) out += ", ";
            out += v[i].to_display_string(max_array_items);
          }
          if (v.size() > max_array_items) {
            out += fmt::format("{}... ({} items)", max_array_items > 0 ? ", " : "", v.size());
          }
          return out + "]";
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          // A float32 printed as float keeps 1e-05 from showing as 9.999999747378752e-06.
          if (type == GgufType::FLOAT32) return fmt::format("{}", static_cast<float>(v));
          return fmt::format("{}", v);
        } else {
          return fmt::format("{}", v);
        }
      },
      value);
}

// ---- GgufTensorInfo / GgufFile --------------------------------------------------------------

int64_t GgufTensorInfo::element_count() const {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(n, d, &n)) fail("tensor {}: element count overflows", name);
  }
  return n;
}

GgufFile GgufFile::parse(std::shared_ptr<MappedFile> file) {
  if (!file) fail("gguf: no file given");
  GgufFile g;
  g.file_ = std::move(file);
  const std::string& path = g.file_->name();
  const uint8_t* data = g.file_->data();
  const size_t size = g.file_->size();
  Reader r(data, size, path);

  // --- header
  if (size < 4) r.fail_at(0, "not a GGUF file: only {} bytes", size);
  const uint32_t magic = r.u32("the magic");
  if (magic != kMagic) {
    r.fail_at(0, "not a GGUF file: magic is \"{}\", expected \"GGUF\"",
              printable(std::string_view(reinterpret_cast<const char*>(data), 4)));
  }
  g.version_ = r.u32("the version");
  if (g.version_ != 2 && g.version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(g.version_);
    if (swapped == 2 || swapped == 3) {
      r.fail_at(4, "big-endian GGUF (version {}) is not supported", swapped);
    }
    r.fail_at(4, "unsupported GGUF version {} (skiff reads versions 2 and 3)", g.version_);
  }
  const uint64_t tensor_count = r.u64("the tensor count");
  const uint64_t kv_count = r.u64("the metadata count");
  // Each metadata entry takes >= 13 bytes (key length, type, 1-byte value); each tensor info
  // >= 32 (name length, n_dims, one dim, type, offset).
  if (tensor_count > r.remaining() / 32) {
    r.fail_at(8, "tensor count {} cannot fit in the remaining {} bytes", tensor_count,
              r.remaining());
  }
  if (kv_count > (r.remaining() - tensor_count * 32) / 13) {
    r.fail_at(16, "metadata count {} cannot fit in the remaining {} bytes", kv_count,
              r.remaining());
  }

  // --- metadata
  g.metadata_.reserve(static_cast<size_t>(kv_count));
  size_t alignment_at = 0;  // where general.alignment sits, for its error message
  for (uint64_t i = 0; i < kv_count; ++i) {
    const size_t at = r.pos();
    std::string key = r.string("metadata key");
    if (g.metadata_index_.count(key) != 0) {
      r.fail_at(at, "duplicate metadata key \"{}\"", printable(key));
    }
    if (key == kAlignmentKey) alignment_at = at;
    const GgufType type = read_type(r, key, "value type");
    GgufValue value = read_value(r, type, key, 0);
    g.metadata_index_.emplace(key, g.metadata_.size());
    g.metadata_.emplace_back(std::move(key), std::move(value));
  }
  if (const GgufValue* a = g.find(kAlignmentKey)) {
    if (!a->is_integer()) {
      r.fail_at(alignment_at, "{} must be an integer, found {}", kAlignmentKey, type_name(a->type));
    }
    uint64_t alignment = 0;  // stays 0, and is refused, when negative
    if (const auto* u = std::get_if<uint64_t>(&a->value)) alignment = *u;
    if (const auto* i = std::get_if<int64_t>(&a->value); i && *i > 0) {
      alignment = static_cast<uint64_t>(*i);
    }
    if (!std::has_single_bit(alignment) || alignment > kMaxAlignment) {
      r.fail_at(alignment_at, "{} {} is not a power of two between 1 and {}", kAlignmentKey,
                a->to_display_string(), kMaxAlignment);
    }
    g.alignment_ = alignment;
  }

  // --- tensor infos
  g.tensors_.reserve(static_cast<size_t>(tensor_count));
  std::vector<size_t> offset_field_pos;
  offset_field_pos.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    const size_t at = r.pos();
    t.name = r.string("tensor name");
    const std::string name = printable(t.name);
    if (g.tensor_index_.count(t.name) != 0) r.fail_at(at, "duplicate tensor name \"{}\"", name);
    const size_t dims_at = r.pos();
    const uint32_t n_dims = r.u32("tensor n_dims");
    if (n_dims < 1 || n_dims > kMaxDims) {
      r.fail_at(dims_at, "tensor \"{}\" has {} dimensions (1 to {} allowed)", name, n_dims,
                kMaxDims);
    }
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const size_t dim_at = r.pos();
      const uint64_t dim = r.u64("tensor dimension");
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        r.fail_at(dim_at, "tensor \"{}\" dimension {} is {} (must be positive)", name, d,
                  static_cast<int64_t>(dim));
      }
      t.dims.push_back(static_cast<int64_t>(dim));
      if (__builtin_mul_overflow(elements, static_cast<int64_t>(dim), &elements)) {
        r.fail_at(dim_at, "tensor \"{}\" element count overflows", name);
      }
    }
    const size_t type_at = r.pos();
    const uint32_t type_id = r.u32("tensor type");
    const std::optional<DTypeTraits> tr = dtype_traits(type_id);
    if (!tr) r.fail_at(type_at, "tensor \"{}\" has unknown type id {}", name, type_id);
    t.type = static_cast<DType>(type_id);
    if (t.dims[0] % tr->block_size != 0) {
      r.fail_at(dims_at, "tensor \"{}\" row length {} is not a multiple of the {} block size {}",
                name, t.dims[0], tr->name, tr->block_size);
    }
    const uint64_t rows = static_cast<uint64_t>(elements / t.dims[0]);
    const uint64_t blocks_per_row = static_cast<uint64_t>(t.dims[0] / tr->block_size);
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(blocks_per_row, static_cast<uint64_t>(tr->block_bytes), &nbytes) ||
        __builtin_mul_overflow(nbytes, rows, &nbytes) || nbytes > size) {
      r.fail_at(dims_at, "tensor \"{}\" ({} elements of {}) is larger than the file ({} bytes)",
                name, elements, tr->name, size);
    }
    t.nbytes = static_cast<size_t>(nbytes);
    offset_field_pos.push_back(r.pos());
    t.offset = r.u64("tensor data offset");
    g.tensor_index_.emplace(t.name, g.tensors_.size());
    g.tensors_.push_back(std::move(t));
  }

  // --- data section: starts at the header end rounded up to the alignment
  const uint64_t data_start = align_up(r.pos(), g.alignment_);
  for (size_t i = 0; i < g.tensors_.size(); ++i) {
    GgufTensorInfo& t = g.tensors_[i];
    const std::string name = printable(t.name);
    if (t.offset % g.alignment_ != 0) {
      r.fail_at(offset_field_pos[i],
                "tensor \"{}\" data offset {} is not a multiple of the "
                "alignment {}",
                name, t.offset, g.alignment_);
    }
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(data_start, t.offset, &begin) ||
        __builtin_add_overflow(begin, uint64_t{t.nbytes}, &end) || end > size) {
      r.fail_at(offset_field_pos[i],
                "tensor \"{}\" data (offset {}, {} bytes) runs past the end "
                "of the file ({} bytes, data section at {})",
                name, t.offset, t.nbytes, size, data_start);
    }
    t.data = data + begin;
  }
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) fail("{}: missing metadata key {}", path(), key);
  return v->as_int(fmt::format("{}: metadata key {}", path(), key));
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  const GgufValue* v = find(key);
  return v == nullptr ? fallback : v->as_int(fmt::format("{}: metadata key {}", path(), key));
}

double GgufFile::get_double(const std::string& key, double fallback) const {
  const GgufValue* v = find(key);
  return v == nullptr ? fallback : v->as_double(fmt::format("{}: metadata key {}", path(), key));
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  const GgufValue* v = find(key);
  return v == nullptr ? fallback : v->as_string(fmt::format("{}: metadata key {}", path(), key));
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  return v == nullptr ? fallback : v->as_bool(fmt::format("{}: metadata key {}", path(), key));
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---- GgufWriter -----------------------------------------------------------------------------

namespace {

class Buffer {
 public:
  void put_le(uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) bytes.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void put_string(const std::string& s) {
    put_le(s.size(), 8);
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void pad_to(uint64_t alignment) { bytes.resize(align_up(bytes.size(), alignment), 0); }
  std::vector<uint8_t> bytes;
};

// The integer in `v` as the unsigned bit pattern of a `bits`-wide field of the declared
// signedness, after checking it fits.
uint64_t checked_integer(const GgufValue& v, int bits, const std::string& key) {
  const bool want_signed = is_signed(v.type);
  const uint64_t umax =
      bits == 64 ? std::numeric_limits<uint64_t>::max() : (uint64_t{1} << bits) - 1;
  const int64_t smax = static_cast<int64_t>(umax >> 1);
  const int64_t smin = -smax - 1;
  if (const auto* u = std::get_if<uint64_t>(&v.value)) {
    if (want_signed ? *u > static_cast<uint64_t>(smax) : *u > umax) {
      fail("gguf writer: key {}: {} does not fit in {}", key, *u, type_name(v.type));
    }
    return *u;
  }
  if (const auto* i = std::get_if<int64_t>(&v.value)) {
    if (want_signed ? (*i < smin || *i > smax) : (*i < 0 || static_cast<uint64_t>(*i) > umax)) {
      fail("gguf writer: key {}: {} does not fit in {}", key, *i, type_name(v.type));
    }
    return static_cast<uint64_t>(*i) & umax;
  }
  fail("gguf writer: key {}: {} value holds no integer", key, type_name(v.type));
}

double checked_double(const GgufValue& v, const std::string& key) {
  if (const auto* d = std::get_if<double>(&v.value)) return *d;
  fail("gguf writer: key {}: {} value holds no floating-point number", key, type_name(v.type));
}

void write_payload(Buffer& out, const GgufValue& v, const std::string& key, int depth) {
  switch (v.type) {
    case GgufType::UINT8:
    case GgufType::INT8:
      out.put_le(checked_integer(v, 8, key), 1);
      return;
    case GgufType::UINT16:
    case GgufType::INT16:
      out.put_le(checked_integer(v, 16, key), 2);
      return;
    case GgufType::UINT32:
    case GgufType::INT32:
      out.put_le(checked_integer(v, 32, key), 4);
      return;
    case GgufType::UINT64:
    case GgufType::INT64:
      out.put_le(checked_integer(v, 64, key), 8);
      return;
    case GgufType::FLOAT32:
      out.put_le(std::bit_cast<uint32_t>(static_cast<float>(checked_double(v, key))), 4);
      return;
    case GgufType::FLOAT64:
      out.put_le(std::bit_cast<uint64_t>(checked_double(v, key)), 8);
      return;
    case GgufType::BOOL: {
      const auto* b = std::get_if<bool>(&v.value);
      if (b == nullptr) fail("gguf writer: key {}: bool value holds no bool", key);
      out.put_le(*b ? 1 : 0, 1);
      return;
    }
    case GgufType::STRING: {
      const auto* s = std::get_if<std::string>(&v.value);
      if (s == nullptr) fail("gguf writer: key {}: string value holds no string", key);
      out.put_string(*s);
      return;
    }
    case GgufType::ARRAY: {
      const auto* items = std::get_if<std::vector<GgufValue>>(&v.value);
      if (items == nullptr) fail("gguf writer: key {}: array value holds no items", key);
      if (depth >= kMaxArrayNesting) {
        fail("gguf writer: key {}: arrays nested deeper than {}", key, kMaxArrayNesting);
      }
      if (!is_valid_type(static_cast<uint32_t>(v.array_type))) {
        fail("gguf writer: key {}: unknown array element type {}", key,
             static_cast<uint32_t>(v.array_type));
      }
      out.put_le(static_cast<uint32_t>(v.array_type), 4);
      out.put_le(items->size(), 8);
      for (const GgufValue& item : *items) {
        if (item.type != v.array_type) {
          fail("gguf writer: key {}: {} item in an array of {}", key, type_name(item.type),
               type_name(v.array_type));
        }
        write_payload(out, item, key, depth + 1);
      }
      return;
    }
  }
  fail("gguf writer: key {}: unknown value type {}", key, static_cast<uint32_t>(v.type));
}

}  // namespace

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, DType type, std::vector<int64_t> dims,
                            std::span<const uint8_t> data) {
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) fail("gguf writer: duplicate tensor name {}", name);
  }
  const std::optional<DTypeTraits> tr = dtype_traits(static_cast<uint32_t>(type));
  if (!tr) fail("gguf writer: tensor {}: unknown type id {}", name, static_cast<uint32_t>(type));
  if (dims.empty() || dims.size() > kMaxDims) {
    fail("gguf writer: tensor {}: {} dimensions (1 to {} allowed)", name, dims.size(), kMaxDims);
  }
  int64_t elements = 1;
  for (int64_t d : dims) {
    if (d <= 0 || __builtin_mul_overflow(elements, d, &elements)) {
      fail("gguf writer: tensor {}: bad dimension {}", name, d);
    }
  }
  if (dims[0] % tr->block_size != 0) {
    fail("gguf writer: tensor {}: row length {} is not a multiple of the {} block size {}", name,
         dims[0], tr->name, tr->block_size);
  }
  const size_t expected = row_bytes(type, dims[0]) * static_cast<size_t>(elements / dims[0]);
  if (data.size() != expected) {
    fail("gguf writer: tensor {}: {} bytes of data, expected {}", name, data.size(), expected);
  }
  tensors_.push_back({name, type, std::move(dims), std::vector<uint8_t>(data.begin(), data.end())});
}

std::vector<uint8_t> GgufWriter::serialize() const {
  if (alignment_ == 0 || !std::has_single_bit(alignment_) || alignment_ > kMaxAlignment) {
    fail("gguf writer: alignment {} is not a power of two between 1 and {}", alignment_,
         kMaxAlignment);
  }
  const bool has_alignment_key = std::any_of(
      metadata_.begin(), metadata_.end(), [](const auto& kv) { return kv.first == kAlignmentKey; });
  const bool add_alignment_key = alignment_ != kDefaultAlignment && !has_alignment_key;
  if (has_alignment_key) {
    for (const auto& [k, v] : metadata_) {
      if (k != kAlignmentKey) continue;
      if (!v.is_integer() || v.as_int(k) != static_cast<int64_t>(alignment_)) {
        fail("gguf writer: {} = {} disagrees with the writer's alignment {}", k,
             v.to_display_string(), alignment_);
      }
    }
  }

  Buffer out;
  out.put_le(kMagic, 4);
  out.put_le(3, 4);
  out.put_le(tensors_.size(), 8);
  out.put_le(metadata_.size() + (add_alignment_key ? 1 : 0), 8);
  if (add_alignment_key) {
    out.put_string(kAlignmentKey);
    out.put_le(static_cast<uint32_t>(GgufType::UINT32), 4);
    out.put_le(alignment_, 4);
  }
  for (const auto& [key, value] : metadata_) {
    out.put_string(key);
    if (!is_valid_type(static_cast<uint32_t>(value.type))) {
      fail("gguf writer: key {}: unknown value type {}", key, static_cast<uint32_t>(value.type));
    }
    out.put_le(static_cast<uint32_t>(value.type), 4);
    write_payload(out, value, key, 0);
  }
  // Tensor data follow one another, each padded to the alignment (as ggml lays them out).
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    out.put_string(t.name);
    out.put_le(t.dims.size(), 4);
    for (int64_t d : t.dims) out.put_le(static_cast<uint64_t>(d), 8);
    out.put_le(static_cast<uint32_t>(t.type), 4);
    out.put_le(offset, 8);
    offset += align_up(t.data.size(), alignment_);
  }
  out.pad_to(alignment_);
  for (const PendingTensor& t : tensors_) {
    out.bytes.insert(out.bytes.end(), t.data.begin(), t.data.end());
    out.pad_to(alignment_);
  }
  return std::move(out.bytes);
}

void GgufWriter::write(const std::string& path) const { write_file_atomically(path, serialize()); }

}  // namespace skiff
