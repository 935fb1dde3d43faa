// Pipeline-stage plans (--stage-layers, --stages auto) and the --sim-link syntax: parsing,
// placement and every rejection, without MPI.
#include <gtest/gtest.h>

#include "base/error.h"
#include "dist/link.h"
#include "dist/stage_plan.h"

namespace skiff::dist {
namespace {

std::vector<LayerRange> ranges(std::initializer_list<LayerRange> r) { return r; }

TEST(StagePlan, ParsesRanges) {
  EXPECT_EQ(parse_stage_layers("0:6,6:16").ranges, ranges({{0, 6}, {6, 16}}));
  EXPECT_EQ(parse_stage_layers("0:5").ranges, ranges({{0, 5}}));
  EXPECT_EQ(parse_stage_layers("0:1,1:2,2:4").describe(), "0:1,1:2,2:4");
}

TEST(StagePlan, RejectsBadSyntax) {
  for (const char* bad : {"", "0-6", "0:6,", ",0:6", "0:6,6", "a:6", "0:6x", "-1:3", "0:", ":4", "0:6;6:8"})
    EXPECT_THROW(parse_stage_layers(bad), Error) << bad;
}

TEST(StagePlan, ValidatesAgainstModelAndRanks) {
  EXPECT_NO_THROW(validate_stage_plan(parse_stage_layers("0:6,6:16"), 16, 2));
  auto message = [](const char* text, int L, int S, int keep = 0) {
    try {
      validate_stage_plan(parse_stage_layers(text), L, S, keep);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message("0:6,6:16", 16, 3).find("2 stages for 3 processes"), std::string::npos);
  EXPECT_NE(message("0:6,7:16", 16, 2).find("starts at layer 7, expected 6"), std::string::npos);
  EXPECT_NE(message("1:6,6:16", 16, 2).find("starts at layer 1, expected 0"), std::string::npos);
  EXPECT_NE(message("0:6,6:6,6:16", 16, 3).find("holds no layers"), std::string::npos);
  EXPECT_NE(message("0:6,6:15", 16, 2).find("the model has 16 layers"), std::string::npos);
  EXPECT_NE(message("0:6,6:17", 16, 2).find("the model has 16 layers"), std::string::npos);
  EXPECT_NE(message("0:2,2:16", 16, 2, 3).find("--self-spec 3"), std::string::npos);
  EXPECT_EQ(message("0:3,3:16", 16, 2, 3), "");
}

TEST(StagePlan, PlacesEvenly) {
  EXPECT_EQ(place_stages(8, 1).ranges, ranges({{0, 8}}));
  EXPECT_EQ(place_stages(8, 2).ranges, ranges({{0, 4}, {4, 8}}));
  EXPECT_EQ(place_stages(5, 2).ranges, ranges({{0, 3}, {3, 5}}));
  EXPECT_EQ(place_stages(5, 3).ranges, ranges({{0, 2}, {2, 4}, {4, 5}}));
  EXPECT_EQ(place_stages(5, 5).ranges, ranges({{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}}));
  EXPECT_THROW(place_stages(4, 5), Error);
  EXPECT_THROW(place_stages(4, 0), Error);
  for (int L = 1; L <= 12; ++L)
    for (int S = 1; S <= L; ++S)
      for (int keep = 0; keep < L && L - keep >= S - 1; ++keep)
        EXPECT_NO_THROW(validate_stage_plan(place_stages(L, S, keep), L, S, keep)) << L << " " << S << " " << keep;
}

TEST(StagePlan, KeepsDraftLayersOnStageZero) {
  // Self-speculation drafts with layers 0..E-1: all on stage 0, the rest split evenly.
  EXPECT_EQ(place_stages(8, 2, 6).ranges, ranges({{0, 6}, {6, 8}}));
  EXPECT_EQ(place_stages(8, 3, 4).ranges, ranges({{0, 4}, {4, 6}, {6, 8}}));
  EXPECT_EQ(place_stages(8, 4, 1).ranges, ranges({{0, 2}, {2, 4}, {4, 6}, {6, 8}}));
  EXPECT_EQ(place_stages(5, 3, 3).ranges, ranges({{0, 3}, {3, 4}, {4, 5}}));
  EXPECT_THROW(place_stages(5, 3, 4), Error);  // one layer left for two stages
}

TEST(StagePlan, PlacesByFreeMemory) {
  const std::vector<double> eight(8, 100.0);  // 8 layers of 100 bytes
  // Equal memory and no head: even.
  EXPECT_EQ(place_stages_by_memory(eight, 0, {1000, 1000}).ranges, ranges({{0, 4}, {4, 8}}));
  // Rank 1 has three times rank 0's room: a quarter of the layers on stage 0.
  EXPECT_EQ(place_stages_by_memory(eight, 0, {1000, 3000}).ranges, ranges({{0, 2}, {2, 8}}));
  // Stage 0's head takes from its room: 1000 - 500 against 1000 -> a third.
  EXPECT_EQ(place_stages_by_memory(eight, 500, {1000, 1000}).ranges, ranges({{0, 3}, {3, 8}}));
  // Uneven layers: the boundary nearest the share of bytes (half of 1000 is at layer 2).
  EXPECT_EQ(place_stages_by_memory({400, 100, 100, 100, 100, 200}, 0, {1, 1}).ranges, ranges({{0, 2}, {2, 6}}));
  // Every stage keeps a layer, however little room it has; stage 0 keeps the draft layers.
  EXPECT_EQ(place_stages_by_memory(eight, 0, {10, 10000, 10}).ranges, ranges({{0, 1}, {1, 7}, {7, 8}}));
  EXPECT_EQ(place_stages_by_memory(eight, 0, {10, 10000}, 3).ranges, ranges({{0, 3}, {3, 8}}));
  // Unknown memory everywhere (0): even by bytes.
  EXPECT_EQ(place_stages_by_memory(eight, 0, {0, 0, 0, 0}).ranges, ranges({{0, 2}, {2, 4}, {4, 6}, {6, 8}}));
  EXPECT_THROW(place_stages_by_memory({100, 100}, 0, {1, 1, 1}), Error);  // more stages than layers
}

TEST(SimLink, ParsesUnits) {
  SimLink a = parse_sim_link("1Gbit,200us");
  EXPECT_DOUBLE_EQ(a.bits_per_second, 1e9);
  EXPECT_DOUBLE_EQ(a.latency_seconds, 200e-6);
  SimLink b = parse_sim_link("100Mbit,1ms");
  EXPECT_DOUBLE_EQ(b.bits_per_second, 1e8);
  EXPECT_DOUBLE_EQ(b.latency_seconds, 1e-3);
  SimLink c = parse_sim_link("1e9,0.0002");
  EXPECT_DOUBLE_EQ(c.bits_per_second, 1e9);
  EXPECT_DOUBLE_EQ(c.latency_seconds, 2e-4);
  // 1 Gbit/s, 200 us: 1000 bytes take 200 us + 8 us.
  EXPECT_NEAR(a.delay_seconds(1000), 208e-6, 1e-12);
  EXPECT_EQ(SimLink{}.delay_seconds(1000), 0.0);
  EXPECT_EQ(a.describe(), "1000 Mbit/s, 200 us");
}

TEST(SimLink, RejectsBadText) {
  for (const char* bad : {"", "1Gbit", "1Gbit,", ",200us", "1GB,200us", "1Gbit,200ns", "0,1ms", "-1Gbit,1ms",
                          "1Gbit,-1ms", "fast,1ms", "inf,1ms", "1Gbit,nan"})
    EXPECT_THROW(parse_sim_link(bad), Error) << bad;
}

}  // namespace
}  // namespace skiff::dist
