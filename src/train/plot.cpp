#include "train/plot.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace skiff::train {

namespace {

const char* color(size_t i) {
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return palette[i % 10];
}

// One panel at (x0, y0) of w x h: axes, ticks, a polyline per layer.
void panel(std::string& svg, const std::vector<EvalPoint>& pts, bool loss, double x0, double y0,
           double w, double h, const char* label) {
  const size_t L = pts.empty() ? 0 : pts.front().loss.size();
  double smin = 0, smax = 1, vmin = 0, vmax = 1;
  if (!pts.empty()) {
    smin = static_cast<double>(pts.front().step);
    smax = static_cast<double>(pts.back().step);
    if (smax <= smin) smax = smin + 1;
    if (loss) {
      vmin = 1e300;
      vmax = -1e300;
      for (const auto& p : pts)
        for (double v : p.loss)
          if (std::isfinite(v)) vmin = std::min(vmin, v), vmax = std::max(vmax, v);
      if (!(vmax > vmin)) vmin -= 0.5, vmax += 0.5;
      double pad = 0.05 * (vmax - vmin);
      vmin -= pad;
      vmax += pad;
    }
  }
  auto X = [&](double s) { return x0 + (s - smin) / (smax - smin) * w; };
  auto Y = [&](double v) { return y0 + h - (v - vmin) / (vmax - vmin) * h; };
  svg += fmt::format("<rect x='{:.1f}' y='{:.1f}' width='{:.1f}' height='{:.1f}' fill='none' stroke='#444'/>\n",
                     x0, y0, w, h);
  svg += fmt::format("<text x='{:.1f}' y='{:.1f}' font-size='13' text-anchor='middle'>{}</text>\n",
                     x0 + w / 2, y0 - 8, label);
  for (int i = 0; i <= 4; ++i) {
    double v = vmin + (vmax - vmin) * i / 4.0, s = smin + (smax - smin) * i / 4.0;
    svg += fmt::format("<text x='{:.1f}' y='{:.1f}' font-size='10' text-anchor='end'>{:.3g}</text>\n",
                       x0 - 4, Y(v) + 3, loss ? v : v * 100.0);
    svg += fmt::format("<text x='{:.1f}' y='{:.1f}' font-size='10' text-anchor='middle'>{:.0f}</text>\n",
                       X(s), y0 + h + 14, s);
  }
  svg += fmt::format("<text x='{:.1f}' y='{:.1f}' font-size='11' text-anchor='middle'>step</text>\n",
                     x0 + w / 2, y0 + h + 30);
  for (size_t l = 0; l < L; ++l) {
    std::string points;
    for (const auto& p : pts) {
      double v = loss ? p.loss[l] : p.agree[l];
      if (std::isfinite(v)) points += fmt::format("{:.1f},{:.1f} ", X(static_cast<double>(p.step)), Y(v));
    }
    svg += fmt::format("<polyline fill='none' stroke='{}' stroke-width='1.5' points='{}'/>\n", color(l), points);
  }
}

}  // namespace

std::string render_eval_svg(const std::vector<EvalPoint>& points, const std::string& title) {
  const double W = 900, H = 380;
  std::string svg = fmt::format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif'>\n"
      "<rect width='100%' height='100%' fill='white'/>\n"
      "<text x='{}' y='20' font-size='15' text-anchor='middle'>{}</text>\n",
      W, H, W / 2, title);
  panel(svg, points, true, 60, 50, 340, 260, "validation loss per exit layer");
  panel(svg, points, false, 480, 50, 340, 260, "top-1 agreement with the final layer (%)");
  const size_t L = points.empty() ? 0 : points.front().loss.size();
  for (size_t l = 0; l < L; ++l)
    svg += fmt::format(
        "<line x1='{0}' y1='{1}' x2='{2}' y2='{1}' stroke='{3}' stroke-width='3'/>"
        "<text x='{4}' y='{5}' font-size='11'>layer {6}</text>\n",
        835, 60 + 16 * l, 850, color(l), 854, 64 + 16 * l, l + 1);
  svg += "</svg>\n";
  return svg;
}

}  // namespace skiff::train
