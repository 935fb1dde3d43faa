// libFuzzer target for a pack's predictors.gguf: any bytes must either load as predictors for
// the expected shape (2 layers, dim 8, ffn 12) or throw skiff::Error. When they load, scoring
// a vector must stay inside the loaded arrays (the sanitizers watch).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "flash/predictor.h"
#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int kLayers = 2, kDim = 8, kFfn = 12;
  try {
    const skiff::GgufFile file =
        skiff::GgufFile::parse(skiff::MappedFile::borrow(std::span<const uint8_t>(data, size), "fuzz/predictors.gguf"));
    const skiff::flash::Predictors p = skiff::flash::parse_predictors(file, kLayers, kDim, kFfn);
    static skiff::ThreadPool pool(1);
    std::vector<float> x(kDim, 0.5f), scores(kFfn), hidden;
    for (const skiff::flash::LayerPredictor& layer : p.layers)
      skiff::flash::predict_scores(layer, kDim, kFfn, x.data(), 1, scores.data(), hidden, pool);
  } catch (const skiff::Error&) {
    // Rejected input.
  }
  return 0;
}
