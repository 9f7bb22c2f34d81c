// gnuplot driver.
#include "plot.h"

#include <fmt/format.h>

#include <cstdlib>
#include <string>

#include "bnorm/data/csv.h"

namespace bnorm::cli {

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Appends one panel's commands; data blocks go to `dat`, indexed from `first_index`.
std::string panel(const PlotSpec& spec, const std::vector<Series>& series,
                  const std::string& dat_name, std::string& dat, int& index) {
  std::string gp = fmt::format("set title {}\nset xlabel {}\nset ylabel {}\n", quote(spec.title),
                               quote(spec.xlabel), quote(spec.ylabel));
  gp += spec.logx ? "set logscale x\n" : "unset logscale x\n";
  gp += "set grid\nset key bottom right\n" + spec.extra + "\n";
  std::string plot = "plot ";
  for (std::size_t i = 0; i < series.size(); ++i) {
    dat += fmt::format("# {}\n", series[i].name);
    for (const auto& [x, y] : series[i].points) dat += fmt::format("{} {}\n", x, y);
    dat += "\n\n";
    plot += fmt::format("{}{} index {} with {} lw 2 title {}", i ? ", " : "", quote(dat_name),
                        index++, series[i].style, quote(series[i].name));
  }
  return gp + plot + "\n";
}

bool run(const std::string& base, const std::string& gp, const std::string& dat) {
  data::write_file_atomic(base + ".dat", dat);
  data::write_file_atomic(base + ".gp", gp);
  const std::string cmd = fmt::format("gnuplot {} 2>/dev/null", quote(base + ".gp"));
  if (std::system(cmd.c_str()) != 0) {
    fmt::print(stderr,
               "warning: gnuplot failed for {}.gp (install gnuplot-nox); data kept in {}.dat\n",
               base, base);
    return false;
  }
  return true;
}

}  // namespace

bool plot_lines(const std::string& base, const PlotSpec& spec, const std::vector<Series>& series) {
  return plot_panels(base, {spec}, {series});
}

bool plot_panels(const std::string& base, const std::vector<PlotSpec>& specs,
                 const std::vector<std::vector<Series>>& panels) {
  std::string dat;
  const int n = static_cast<int>(specs.size());
  // The script runs from any directory: it names the data file by its full path.
  std::string gp =
      fmt::format("set terminal pngcairo size {},480 font 'DejaVu Sans,10'\nset output {}\n",
                  560 * n, quote(base + ".png"));
  if (n > 1) gp += fmt::format("set multiplot layout 1,{}\n", n);
  int index = 0;
  for (int i = 0; i < n; ++i) gp += panel(specs[i], panels[i], base + ".dat", dat, index);
  if (n > 1) gp += "unset multiplot\n";
  return run(base, gp, dat);
}

}  // namespace bnorm::cli
