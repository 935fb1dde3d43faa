// Writes and checks flash packs (see pack.h): resident.gguf is a copy of the source GGUF
// without the FFN up/down tensors; bundles.bin is built one layer at a time (at most one
// layer's bundles in memory) into a temporary file that is renamed into place at the end.
#include "flash/pack.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "io/export_gguf.h"

namespace skiff::flash {
namespace {

// Field offsets inside the header (see pack.h).
constexpr size_t kOffVersion = 8, kOffType = 12, kOffLayers = 16, kOffDim = 20, kOffFfn = 24;
constexpr size_t kOffReserved = 28, kOffRowBytes = 32, kOffStride = 40, kOffDataOffset = 48;
constexpr size_t kOffFileBytes = 56, kOffChecksum = 64;
constexpr uint64_t kStrideAlign = 64;
// Bounds that keep every product below 2^63: layers <= 2^10, ffn_dim <= 2^20, stride <= 2^30.
constexpr uint64_t kMaxLayers = 1024, kMaxDim = 1 << 16, kMaxFfnDim = 1 << 20;
constexpr uint64_t kMaxStride = uint64_t{1} << 30;


bool is_bundle_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// A file written through a temporary beside it, renamed into place by commit(); removed if
// never committed.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path)
      : path_(std::move(path)), tmp_(path_ + ".tmp" + std::to_string(getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create {}: {}", tmp_, std::strerror(errno));
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const uint8_t* data, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd_, data, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("cannot write {}: {}", tmp_, std::strerror(w < 0 ? errno : EIO));
      data += w;
      n -= static_cast<size_t>(w);
    }
  }
  void commit() {
    if (::fsync(fd_) != 0) fail("cannot write {}: {}", tmp_, std::strerror(errno));
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail("cannot write {}: {}", tmp_, std::strerror(errno));
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail("cannot rename {} to {}: {}", tmp_, path_, std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// The bundle type: the caller's, else the FFN's own when it is F32/F16/BF16, else F16.
DType choose_type(const Model& model, const PackOptions& options) {
  if (options.type) {
    if (!is_bundle_type(*options.type))
      fail("flash pack: bundle type {} is not supported (f32, f16 or bf16)",
           dtype_name(*options.type));
    return *options.type;
  }
  DType t = model.layers.empty() ? DType::F16 : model.layers[0].ffn_up.type;
  return is_bundle_type(t) ? t : DType::F16;
}

void check_source(const Model& model) {
  if (!model.gguf) fail("{}: flash packs are made from GGUF models", model.source);
  const ModelConfig& c = model.config;
  if (model.layers.size() != static_cast<size_t>(c.n_layers))
    fail("{}: model has {} layers, config says {}", model.source, model.layers.size(), c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model.layers[static_cast<size_t>(l)];
    for (const auto& [t, what] :
         {std::pair{&w.ffn_gate, "ffn_gate"}, std::pair{&w.ffn_up, "ffn_up"},
          std::pair{&w.ffn_down, "ffn_down"}}) {
      if (t->empty())
        fail("{}: layer {} has no {} weights (a flash pack needs the dense FFN)", model.source, l,
             what);
      if (!traits(t->type).can_dequantize)
        fail("{}: blk.{}.{}.weight has type {}, which skiff cannot read", model.source, l, what,
             dtype_name(t->type));
    }
  }
}

PackHeader make_header(const ModelConfig& c, DType type) {
  PackHeader h;
  h.type = type;
  h.n_layers = c.n_layers;
  h.dim = c.dim;
  h.ffn_dim = c.ffn_dim;
  h.row_bytes = row_bytes(type, c.dim);
  h.stride = round_up(3 * h.row_bytes, kStrideAlign);
  h.data_offset = kPackAlign;
  h.file_bytes = h.offset(c.n_layers, 0);
  return h;
}

// Fills `buf` (ffn_dim * stride bytes) with layer `w`'s bundles.
void build_layer(const LayerWeights& w, const PackHeader& h, std::vector<uint8_t>& buf) {
  const int64_t dim = h.dim, ffn = h.ffn_dim;
  std::fill(buf.begin(), buf.end(), uint8_t{0});
  std::vector<float> row(static_cast<size_t>(dim));
  for (int64_t i = 0; i < ffn; ++i) {
    uint8_t* bundle = buf.data() + static_cast<size_t>(i) * h.stride;
    dequantize_row(w.ffn_up.type, w.ffn_up.row(i), row.data(), dim);
    quantize_row(h.type, row.data(), bundle + h.up_offset(), dim);
    dequantize_row(w.ffn_gate.type, w.ffn_gate.row(i), row.data(), dim);
    quantize_row(h.type, row.data(), bundle + h.gate_offset(), dim);
  }
  // ffn_down is [dim rows][ffn_dim cols]: column i is element i of every row.
  std::vector<float> down(static_cast<size_t>(dim * ffn));
  for (int64_t r = 0; r < dim; ++r)
    dequantize_row(w.ffn_down.type, w.ffn_down.row(r), down.data() + r * ffn, ffn);
  for (int64_t i = 0; i < ffn; ++i) {
    for (int64_t r = 0; r < dim; ++r)
      row[static_cast<size_t>(r)] = down[static_cast<size_t>(r * ffn + i)];
    quantize_row(h.type, row.data(),
                 buf.data() + static_cast<size_t>(i) * h.stride + h.down_offset(), dim);
  }
}

bool is_up_or_down(const GgufTensorInfo& t) {
  auto ends_with = [&](const char* s) {
    size_t n = std::strlen(s);
    return t.name.size() >= n && t.name.compare(t.name.size() - n, n, s) == 0;
  };
  return t.name.rfind("blk.", 0) == 0 &&
         (ends_with(".ffn_up.weight") || ends_with(".ffn_down.weight"));
}

void check_range(const std::string& name, const char* field, uint64_t v, uint64_t max) {
  if (v == 0 || v > max)
    fail("{}: header field {} = {} is out of range (1..{})", name, field, v, max);
}

}  // namespace

std::string resident_path(const std::string& pack_dir) {
  return (std::filesystem::path(pack_dir) / "resident.gguf").string();
}

std::string bundles_path(const std::string& pack_dir) {
  return (std::filesystem::path(pack_dir) / "bundles.bin").string();
}

std::vector<uint8_t> encode_pack_header(const PackHeader& h) {
  std::vector<uint8_t> out(kPackAlign, 0);
  std::memcpy(out.data(), kPackMagic, sizeof(kPackMagic));
  put_le<uint32_t>(out, kOffVersion, h.version);
  put_le<uint32_t>(out, kOffType, static_cast<uint32_t>(h.type));
  put_le<uint32_t>(out, kOffLayers, static_cast<uint32_t>(h.n_layers));
  put_le<uint32_t>(out, kOffDim, static_cast<uint32_t>(h.dim));
  put_le<uint32_t>(out, kOffFfn, static_cast<uint32_t>(h.ffn_dim));
  put_le<uint64_t>(out, kOffRowBytes, h.row_bytes);
  put_le<uint64_t>(out, kOffStride, h.stride);
  put_le<uint64_t>(out, kOffDataOffset, h.data_offset);
  put_le<uint64_t>(out, kOffFileBytes, h.file_bytes);
  put_le<uint64_t>(out, kOffChecksum, fnv1a({out.data(), kOffChecksum}));
  return out;
}

PackHeader parse_pack_header(std::span<const uint8_t> bytes, uint64_t file_size,
                             const std::string& name) {
  if (bytes.size() < kPackAlign || file_size < kPackAlign)
    fail("{}: truncated: {} bytes, shorter than the {}-byte pack header", name, file_size,
         kPackAlign);
  if (std::memcmp(bytes.data(), kPackMagic, sizeof(kPackMagic)) != 0)
    fail("{}: bad magic: not a flash pack bundles file", name);
  PackHeader h;
  h.version = get_le<uint32_t>(bytes, kOffVersion);
  if (h.version != kPackVersion)
    fail("{}: unsupported pack version {} (this skiff reads version {})", name, h.version,
         kPackVersion);
  uint64_t stored = get_le<uint64_t>(bytes, kOffChecksum);
  uint64_t computed = fnv1a(bytes.first(kOffChecksum));
  if (stored != computed)
    fail("{}: header checksum mismatch (stored {:016x}, computed {:016x}): the header is corrupt",
         name, stored, computed);
  for (size_t i = kPackHeaderUsedBytes; i < kPackAlign; ++i) {
    if (bytes[i] != 0) fail("{}: reserved header byte {} is not zero", name, i);
  }
  if (get_le<uint32_t>(bytes, kOffReserved) != 0)
    fail("{}: reserved header byte {} is not zero", name, kOffReserved);

  uint32_t type_id = get_le<uint32_t>(bytes, kOffType);
  auto tr = dtype_traits(type_id);
  if (!tr || !is_bundle_type(static_cast<DType>(type_id)))
    fail("{}: bundle type {} ({}) is not f32, f16 or bf16", name, type_id,
         tr ? tr->name : "unknown");
  h.type = static_cast<DType>(type_id);
  uint32_t layers = get_le<uint32_t>(bytes, kOffLayers), dim = get_le<uint32_t>(bytes, kOffDim);
  uint32_t ffn = get_le<uint32_t>(bytes, kOffFfn);
  check_range(name, "n_layers", layers, kMaxLayers);
  check_range(name, "dim", dim, kMaxDim);
  check_range(name, "ffn_dim", ffn, kMaxFfnDim);
  h.n_layers = static_cast<int>(layers);
  h.dim = static_cast<int>(dim);
  h.ffn_dim = static_cast<int>(ffn);

  h.row_bytes = get_le<uint64_t>(bytes, kOffRowBytes);
  if (h.row_bytes != row_bytes(h.type, h.dim))
    fail("{}: row_bytes {} does not match {} elements of {} ({} bytes)", name, h.row_bytes, dim,
         dtype_name(h.type), row_bytes(h.type, h.dim));
  h.stride = get_le<uint64_t>(bytes, kOffStride);
  if (h.stride < 3 * h.row_bytes)
    fail("{}: stride {} is smaller than a bundle (3 * row_bytes = {})", name, h.stride,
         3 * h.row_bytes);
  if (h.stride % kStrideAlign != 0 || h.stride > kMaxStride)
    fail("{}: stride {} is not a multiple of {} up to {}", name, h.stride, kStrideAlign,
         kMaxStride);
  h.data_offset = get_le<uint64_t>(bytes, kOffDataOffset);
  if (h.data_offset != kPackAlign)
    fail("{}: data_offset {} is not {}", name, h.data_offset, kPackAlign);
  h.file_bytes = get_le<uint64_t>(bytes, kOffFileBytes);
  uint64_t expected = h.offset(h.n_layers, 0);
  if (h.file_bytes != expected)
    fail("{}: file_bytes {} disagrees with the layout ({} layers x {} bundles of {} bytes + {})",
         name, h.file_bytes, layers, ffn, h.stride, h.data_offset);
  if (file_size < h.file_bytes)
    fail("{}: truncated: {} bytes, the header says {}", name, file_size, h.file_bytes);
  if (file_size > h.file_bytes)
    fail("{}: {} bytes, the header says {} (trailing data)", name, file_size, h.file_bytes);
  return h;
}

PackHeader read_pack_header(const std::string& bundles_file) {
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(bundles_file, ec);
  if (ec) fail("cannot open {}: {}", bundles_file, ec.message());
  std::vector<uint8_t> bytes(std::min<uint64_t>(size, kPackAlign));
  std::FILE* f = std::fopen(bundles_file.c_str(), "rb");
  if (f == nullptr) fail("cannot open {}: {}", bundles_file, std::strerror(errno));
  size_t got = std::fread(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  if (got != bytes.size()) fail("cannot read {}: short read", bundles_file);
  return parse_pack_header(bytes, size, bundles_file);
}

void check_pack_matches(const PackHeader& h, const ModelConfig& c,
                        const std::string& bundles_file) {
  auto check = [&](const char* what, int header_value, int model_value) {
    if (header_value != model_value)
      fail("{}: header says {} = {} but the resident model has {}", bundles_file, what,
           header_value, model_value);
  };
  check("n_layers", h.n_layers, c.n_layers);
  check("dim", h.dim, c.dim);
  check("ffn_dim", h.ffn_dim, c.ffn_dim);
}

namespace {

bool is_gate(const GgufTensorInfo& t) {
  return t.name.ends_with(".ffn_gate.weight");
}

// resident.gguf: the source without up/down; the gates re-quantized to `gate_type` if set.
void write_resident(const Model& model, const std::string& path, std::optional<DType> gate_type) {
  const GgufFile& source = *model.gguf;
  if (!gate_type) {
    copy_gguf(source, path, [](const GgufTensorInfo& t) { return !is_up_or_down(t); });
    return;
  }
  const int64_t block = traits(*gate_type).block_size;
  if (model.config.dim % block != 0)
    fail("--gate-type {}: the width {} is not a multiple of its block size {}", dtype_name(*gate_type),
         model.config.dim, block);
  GgufWriter writer(source.alignment());
  for (const auto& [key, value] : source.metadata()) writer.set(key, value);
  std::vector<float> row(static_cast<size_t>(model.config.dim));
  for (const GgufTensorInfo& t : source.tensors()) {
    if (is_up_or_down(t)) continue;
    if (!is_gate(t) || t.type == *gate_type) {
      writer.add_tensor(t.name, t.type, t.dims, std::span<const uint8_t>(t.data, t.nbytes));
      continue;
    }
    const int64_t cols = t.dims[0], rows = t.dims.size() > 1 ? t.dims[1] : 1;
    const size_t src_row = row_bytes(t.type, cols), dst_row = row_bytes(*gate_type, cols);
    std::vector<uint8_t> out(dst_row * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(t.type, t.data + static_cast<size_t>(r) * src_row, row.data(), cols);
      if (!quantize_row(*gate_type, row.data(), out.data() + static_cast<size_t>(r) * dst_row, cols))
        fail("--gate-type {}: skiff cannot write this type", dtype_name(*gate_type));
    }
    writer.add_tensor(t.name, *gate_type, t.dims, out);
  }
  writer.write(path);
}

}  // namespace

void write_pack(const Model& model, const std::string& out_dir, const PackOptions& options) {
  check_source(model);
  const DType type = choose_type(model, options);
  const PackHeader h = make_header(model.config, type);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) fail("cannot create {}: {}", out_dir, ec.message());

  AtomicFile bundles(bundles_path(out_dir));
  std::vector<uint8_t> header = encode_pack_header(h);
  bundles.write(header.data(), header.size());
  const int64_t total = int64_t{h.n_layers} * h.ffn_dim;
  if (options.progress) options.progress(0, total);
  std::vector<uint8_t> buf(static_cast<size_t>(h.ffn_dim) * h.stride);
  for (int l = 0; l < h.n_layers; ++l) {
    build_layer(model.layers[static_cast<size_t>(l)], h, buf);
    bundles.write(buf.data(), buf.size());
    if (options.progress) options.progress(int64_t{l + 1} * h.ffn_dim, total);
  }
  // bundles.bin is renamed last, so a failure before leaves any older bundles.bin in place.
  write_resident(model, resident_path(out_dir), options.gate_type);
  bundles.commit();
}

LoadedPack load_pack(const std::string& pack_dir) {
  LoadedPack pack;
  LoadOptions options;
  options.ffn_up_down_optional = true;
  options.pack_weights = false;
  pack.model = load_model_gguf(MappedFile::open(resident_path(pack_dir)), options);
  for (size_t l = 0; l < pack.model->layers.size(); ++l) {
    if (pack.model->layers[l].ffn_gate.empty())
      fail("{}: layer {} has no ffn_gate (the flash path needs it resident)", pack.model->source,
           l);
  }
  pack.dir = pack_dir;
  pack.bundles_file = bundles_path(pack_dir);
  pack.header = read_pack_header(pack.bundles_file);
  check_pack_matches(pack.header, pack.model->config, pack.bundles_file);
  return pack;
}

}  // namespace skiff::flash
