// Line plots as PNG through gnuplot (pngcairo): the data and the script are kept beside the PNG
// so a plot can be re-made or restyled by hand.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace bnorm::cli {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
  std::string style = "linespoints";  ///< gnuplot "with" style
};

struct PlotSpec {
  std::string title, xlabel, ylabel;
  bool logx = false;
  std::string extra;  ///< extra gnuplot commands (ranges, keys)
};

/// Writes <base>.dat, <base>.gp and <base>.png. Returns false (with a warning on stderr) when
/// gnuplot is missing or fails; the data files are still written.
bool plot_lines(const std::string& base, const PlotSpec& spec, const std::vector<Series>& series);

/// Several panels side by side in one PNG (multiplot), one PlotSpec and series list each.
bool plot_panels(const std::string& base, const std::vector<PlotSpec>& specs,
                 const std::vector<std::vector<Series>>& panels);

}  // namespace bnorm::cli
