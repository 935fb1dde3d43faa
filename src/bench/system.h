// Measurements of the machine and the process that `skiff bench` and `skiff info` report:
// memory read bandwidth (a streaming read, the ceiling for decoding), resident memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace skiff {

// Bytes per second of a streaming read over a buffer of `bytes` (well beyond the caches)
// with `threads` threads, best of `repeats` passes.
double measure_read_bandwidth(int threads, size_t bytes = size_t{1} << 30, int repeats = 5);

// Resident set size of this process (from /proc/self/statm); 0 if unknown.
size_t resident_bytes();
// Bytes of [data, data + size) resident in memory (mincore); for a mapped file.
size_t resident_bytes_of(const void* data, size_t size);

namespace kernels {
// Sum of n floats, read at full speed (the reads are what is measured).
float stream_sum_scalar(const float* x, int64_t n);
float stream_sum_avx512(const float* x, int64_t n);
}  // namespace kernels

}  // namespace skiff
