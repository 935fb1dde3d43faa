// The flags of a flash run (--flash PACK --mem-budget ...), shared by `generate` and `bench`.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "flash/flash_run.h"

namespace skiff::cli {

struct FlashFlags {
  std::string pack;       // --flash: pack folder from `skiff flash-pack`
  std::string budget;     // --mem-budget
  int window = 4;
  float threshold = 0.0f;
  float sparsity = -1.0f;
  std::string io = "auto";
  bool buffered = false;
  bool predict = false;
  int64_t io_gap = -1;        // --io-gap: bundles at most this far apart are read as one (-1: auto)
  int io_depth = 32;          // --io-depth: reads in flight
  size_t io_max_read = 256 * 1024;  // --io-max-read: largest coalesced read   // --flash-predict: the pack's learned predictors decide
};

void add_flash_flags(CLI::App* cmd, FlashFlags& flags);
// The engine options the flags describe; Error for contradictions (--flash-threshold with
// --flash-sparsity, flash flags without --flash).
flash::FlashOptions flash_options(const FlashFlags& flags, const CLI::App& cmd);
// A one-line summary of the run's memory plan for stderr.
std::string describe_plan(const flash::FlashRun& run);
// Per-token statistics of the run so far (I/O, memory management, compute, bytes, hits).
std::string describe_stats(const flash::FlashStats& stats);

}  // namespace skiff::cli
