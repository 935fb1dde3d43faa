// DirectReader on a real temp file with a known byte pattern, for both backends with O_DIRECT
// on and off: random unaligned requests land the right bytes, adjacent requests coalesce,
// bad requests and files fail with the path named, and deep queues and repeated submits work.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "base/error.h"
#include "flash/direct_io.h"

namespace skiff::flash {
namespace {

namespace fs = std::filesystem;
using Backend = IoOptions::Backend;

// Not a multiple of 4096, so the last aligned block is partial.
constexpr size_t kFileSize = 3 * 1024 * 1024 + 1234;

uint8_t file_byte(uint64_t i) { return static_cast<uint8_t>((i * 131) ^ (i >> 8) ^ (i >> 16) * 7); }

class DirectIoFile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = "/tmp/skiff_direct_io_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = (fs::path(dir_) / "data.bin").string();
    std::vector<uint8_t> bytes(kFileSize);
    for (size_t i = 0; i < kFileSize; ++i) bytes[i] = file_byte(i);
    std::ofstream out(path_, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(kFileSize));
    ASSERT_TRUE(out.good());
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static std::string dir_, path_;
};
std::string DirectIoFile::dir_, DirectIoFile::path_;

// Destination buffers for a set of requests, checked against the file pattern.
struct Batch {
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<ReadRequest> requests;

  void add(uint64_t offset, size_t bytes) {
    buffers.emplace_back(bytes + 2, 0xEE);  // guard bytes either side
    requests.push_back({offset, bytes, nullptr});
  }
  // Points dst one byte into each buffer (unaligned on purpose); call after the last add().
  void finish() {
    for (size_t i = 0; i < requests.size(); ++i) requests[i].dst = buffers[i].data() + 1;
  }
  uint64_t total() const {
    uint64_t sum = 0;
    for (const ReadRequest& r : requests) sum += r.bytes;
    return sum;
  }
  void check() const {
    for (size_t i = 0; i < requests.size(); ++i) {
      const ReadRequest& r = requests[i];
      const std::vector<uint8_t>& b = buffers[i];
      ASSERT_EQ(b.front(), 0xEE) << "request " << i << " wrote before dst";
      ASSERT_EQ(b.back(), 0xEE) << "request " << i << " wrote past its end";
      for (size_t j = 0; j < r.bytes; ++j) {
        ASSERT_EQ(b[j + 1], file_byte(r.offset + j)) << "request " << i << " (offset " << r.offset
                                                     << ", " << r.bytes << " bytes) byte " << j;
      }
    }
  }
};

// A random request mix: log-uniform sizes from 1 byte to 300 KB, some adjacent to the
// previous request, some overlapping it on disk, one ending at the last byte of the file.
Batch random_batch(std::mt19937& rng, int count) {
  Batch batch;
  std::uniform_real_distribution<double> log_size(0.0, std::log(300.0 * 1024));
  uint64_t prev_offset = 0;
  size_t prev_bytes = 0;
  for (int i = 0; i < count; ++i) {
    size_t bytes = std::max<size_t>(1, static_cast<size_t>(std::exp(log_size(rng))));
    uint64_t offset;
    const uint32_t kind = rng() % 8;
    if (kind == 0 && i > 0) {
      offset = prev_offset + prev_bytes;  // adjacent
    } else if (kind == 1 && i > 0) {
      offset = prev_offset + rng() % (prev_bytes + 1);  // overlapping on disk
    } else if (kind == 2) {
      offset = kFileSize - std::min(bytes, kFileSize);  // touches the last byte
    } else {
      offset = rng() % kFileSize;
    }
    bytes = std::min<size_t>(bytes, kFileSize - offset);
    if (bytes == 0) {
      bytes = 1;
      offset = kFileSize - 1;
    }
    batch.add(offset, bytes);
    prev_offset = offset;
    prev_bytes = bytes;
  }
  batch.finish();
  return batch;
}

// Opens a reader for the test's backend. scripts/bootstrap.sh installs liburing and this
// machine kind allows io_uring, so kUring failing to open is a failure, not a skip.
std::unique_ptr<DirectReader> open_reader(const std::string& path, IoOptions options) {
  return std::make_unique<DirectReader>(path, options);
}

class DirectReaderTest : public DirectIoFile,
                         public ::testing::WithParamInterface<std::tuple<Backend, bool>> {
 protected:
  IoOptions options() const {
    IoOptions o;
    o.backend = std::get<0>(GetParam());
    o.direct = std::get<1>(GetParam());
    return o;
  }
};


TEST_P(DirectReaderTest, ReportsBackendAndSize) {
  const IoOptions o = options();
  std::unique_ptr<DirectReader> reader = open_reader(path_, o);
  EXPECT_EQ(reader->file_size(), kFileSize);
  EXPECT_STREQ(reader->backend(), o.backend == Backend::kUring ? "io_uring" : "threads");
  if (!o.direct) {
    EXPECT_FALSE(reader->direct());
  }
  EXPECT_GE(reader->buffer_bytes(), o.max_read);
  // The budget plans with max_buffer_bytes before a reader exists: it must not be less.
  EXPECT_LE(reader->buffer_bytes(), DirectReader::max_buffer_bytes(o));
  IoOptions odd = o;
  odd.max_read = 10000;  // not a multiple of 4096
  odd.queue_depth = 3;
  EXPECT_LE(open_reader(path_, odd)->buffer_bytes(), DirectReader::max_buffer_bytes(odd));
  std::printf("[          ] backend %s, direct %d, %zu bounce bytes\n", reader->backend(),
              reader->direct(), reader->buffer_bytes());
}

TEST_P(DirectReaderTest, RandomRequestsLandRightBytes) {
  std::mt19937 rng(1234);
  for (const auto& [depth, max_read] :
       {std::pair{32, size_t{256 * 1024}}, std::pair{2, size_t{64 * 1024}},
        std::pair{3, size_t{5000}}}) {
    IoOptions o = options();
    o.queue_depth = depth;
    o.max_read = max_read;
    std::unique_ptr<DirectReader> reader = open_reader(path_, o);
    for (int round = 0; round < 8; ++round) {
      Batch batch = random_batch(rng, 1 + static_cast<int>(rng() % 40));
      reader->reset_stats();
      reader->submit(batch.requests);
      reader->wait();
      batch.check();
      if (HasFatalFailure()) return;
      EXPECT_EQ(reader->stats().bytes_requested, batch.total());
      EXPECT_GE(reader->stats().reads, 1u);
      EXPECT_GE(reader->stats().bytes_read, batch.total() / 2);  // overlaps read once
      EXPECT_GE(reader->stats().wait_ms, 0.0);
    }
  }
}

TEST_P(DirectReaderTest, EmptySpan) {
  std::unique_ptr<DirectReader> reader = open_reader(path_, options());
  reader->submit({});
  reader->wait();
  EXPECT_EQ(reader->stats().reads, 0u);
  EXPECT_EQ(reader->stats().bytes_requested, 0u);
  Batch batch;
  batch.add(100, 0);  // zero-byte requests are ignored
  batch.finish();
  reader->submit(batch.requests);
  reader->wait();
  EXPECT_EQ(reader->stats().reads, 0u);
}

TEST_P(DirectReaderTest, AdjacentRequestsCoalesce) {
  std::unique_ptr<DirectReader> reader = open_reader(path_, options());
  Batch batch;
  for (int i = 0; i < 100; ++i) batch.add(5000 + 1000 * static_cast<uint64_t>(i), 1000);
  batch.finish();
  std::vector<ReadRequest> shuffled = batch.requests;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  reader->submit(shuffled);
  reader->wait();
  batch.check();
  EXPECT_EQ(reader->stats().bytes_requested, 100000u);
  EXPECT_EQ(reader->stats().reads, 1u);  // 100 KB in one aligned read
  EXPECT_GE(reader->stats().bytes_read, 100000u);
  EXPECT_LE(reader->stats().bytes_read, 100000u + 2 * 4096);
}

TEST_P(DirectReaderTest, DistantRequestsDoNotCoalesce) {
  IoOptions o = options();
  o.max_gap = 16 * 1024;
  std::unique_ptr<DirectReader> reader = open_reader(path_, o);
  Batch batch;
  for (int i = 0; i < 20; ++i) batch.add(50000 * static_cast<uint64_t>(i) + 7, 300);
  batch.finish();
  reader->submit(batch.requests);
  reader->wait();
  batch.check();
  EXPECT_EQ(reader->stats().reads, 20u);
  EXPECT_EQ(reader->stats().bytes_requested, 6000u);
}

TEST_P(DirectReaderTest, LargeRequestIsSplit) {
  IoOptions o = options();
  o.max_read = 256 * 1024;
  std::unique_ptr<DirectReader> reader = open_reader(path_, o);
  Batch batch;
  batch.add(12345, 1000000);
  batch.add(kFileSize - 700000, 700000);  // ends at the last byte
  batch.finish();
  reader->submit(batch.requests);
  reader->wait();
  batch.check();
  EXPECT_GE(reader->stats().reads, 4u + 3u);
  EXPECT_EQ(reader->stats().bytes_requested, 1700000u);
}

TEST_P(DirectReaderTest, ManyMoreRequestsThanQueueDepth) {
  IoOptions o = options();
  o.queue_depth = 4;
  o.max_gap = 0;
  std::unique_ptr<DirectReader> reader = open_reader(path_, o);
  Batch batch;
  for (int i = 0; i < 500; ++i) batch.add(6000 * static_cast<uint64_t>(i) + 11, 100 + i);
  batch.finish();
  reader->submit(batch.requests);
  reader->wait();
  batch.check();
  EXPECT_EQ(reader->stats().reads, 500u);
}

TEST_P(DirectReaderTest, SubmitTwiceBeforeWait) {
  std::unique_ptr<DirectReader> reader = open_reader(path_, options());
  std::mt19937 rng(99);
  Batch first = random_batch(rng, 30);
  Batch second = random_batch(rng, 30);
  reader->submit(first.requests);
  reader->submit(second.requests);
  reader->wait();
  first.check();
  second.check();
  EXPECT_EQ(reader->stats().bytes_requested, first.total() + second.total());
}

TEST_P(DirectReaderTest, ReadPastEndFailsNamingFileAndOffset) {
  std::unique_ptr<DirectReader> reader = open_reader(path_, options());
  for (const auto& [offset, bytes] : {std::pair{uint64_t{kFileSize - 10}, size_t{11}},
                                      std::pair{uint64_t{kFileSize + 5000}, size_t{1}}}) {
    Batch batch;
    batch.add(0, 10);
    batch.add(offset, bytes);
    batch.finish();
    try {
      reader->submit(batch.requests);
      reader->wait();
      FAIL() << "read past the end did not throw";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(path_), std::string::npos) << message;
      EXPECT_NE(message.find(std::to_string(offset)), std::string::npos) << message;
    }
  }
  // The reader stays usable after a rejected submit.
  Batch ok;
  ok.add(kFileSize - 1, 1);
  ok.finish();
  reader->submit(ok.requests);
  reader->wait();
  ok.check();
}

TEST_P(DirectReaderTest, FileShrunkUnderTheReaderFailsInWait) {
  // Requests are checked against the size seen at open; a file truncated afterwards makes
  // the kernel read come up short, which wait() reports with the file and offset.
  const std::string path = dir_ + "/shrinking.bin";
  {
    std::ofstream out(path, std::ios::binary);
    const std::vector<char> zeros(200000, 0);
    out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  }
  IoOptions o = options();
  o.max_gap = 0;
  std::unique_ptr<DirectReader> reader = open_reader(path, o);
  fs::resize_file(path, 50000);
  Batch batch;
  batch.add(1000, 100);    // still there
  batch.add(150000, 100);  // gone
  batch.finish();
  reader->submit(batch.requests);
  try {
    reader->wait();
    FAIL() << "a read past the shrunk file did not throw";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("offset"), std::string::npos) << message;
  }
  // The error is reported once; the reader keeps working for bytes that exist.
  Batch ok;
  ok.add(2000, 10);
  ok.finish();
  reader->submit(ok.requests);
  reader->wait();
  EXPECT_EQ(ok.buffers[0][1], 0);
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Backends, DirectReaderTest,
    ::testing::Combine(::testing::Values(Backend::kUring, Backend::kThreads), ::testing::Bool()),
    [](const ::testing::TestParamInfo<std::tuple<Backend, bool>>& info) {
      return std::string(std::get<0>(info.param) == Backend::kUring ? "Uring" : "Threads") +
             (std::get<1>(info.param) ? "Direct" : "Buffered");
    });

TEST_F(DirectIoFile, MissingFileFailsNamingPath) {
  const std::string missing = dir_ + "/no_such_file.bin";
  for (Backend backend : {Backend::kAuto, Backend::kThreads}) {
    IoOptions o;
    o.backend = backend;
    try {
      DirectReader reader(missing, o);
      FAIL() << "opening a missing file did not throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    }
  }
}

TEST_F(DirectIoFile, AutoPicksABackend) {
  DirectReader reader(path_);
  const std::string backend = reader.backend();
  EXPECT_TRUE(backend == "io_uring" || backend == "threads") << backend;
  std::printf("[          ] auto backend: %s, direct: %d\n", backend.c_str(), reader.direct());
  Batch batch;
  batch.add(0, kFileSize);
  batch.finish();
  reader.submit(batch.requests);
  reader.wait();
  batch.check();
}

}  // namespace
}  // namespace skiff::flash
