// `bnorm scale`: the seed article's preprocessing on a CSV file — min-max scaling to [0, 1] or
// z-score standardization, fitted on one file and applied to another, or inverted.
#include <fmt/format.h>

#include "bnorm/data/csv.h"
#include "bnorm/data/scaler.h"
#include "commands.h"

namespace bnorm::cli {

void add_scale_command(CLI::App& app) {
  struct ScaleArgs {
    std::string input, out, fit, method = "standard";
    bool inverse = false;
  };
  auto a = std::make_shared<ScaleArgs>();
  CLI::App* c = app.add_subcommand("scale", "min-max or z-score scale the columns of a CSV file");
  c->add_option("input", a->input, "CSV file with a header row")->required();
  c->add_option("--method", a->method, "minmax ([0, 1]) or standard (mean 0, std 1)")
      ->check(CLI::IsMember({"minmax", "standard"}))
      ->capture_default_str();
  c->add_option("--fit", a->fit, "CSV file to fit on (default: the input itself)");
  c->add_flag("--inverse", a->inverse, "undo the scaling (needs --fit: the data it was fitted on)");
  c->add_option("--out", a->out, "output CSV (written atomically)")->required();
  c->callback([a] {
    if (a->inverse && a->fit.empty()) {
      throw ValueError(
          "bnorm scale --inverse needs --fit FILE, the data the scaling was fitted on");
    }
    const data::CsvTable in = data::read_csv(a->input);
    const data::CsvTable fit = a->fit.empty() ? in : data::read_csv(a->fit);
    if (fit.header != in.header) {
      throw ValueError(
          fmt::format("bnorm scale: {} and {} must have the same columns", a->fit, a->input));
    }
    Tensor out;
    if (a->method == "minmax") {
      data::MinMaxScaler s;
      s.fit(fit.values);
      for (std::size_t j = 0; j < in.header.size(); ++j)
        fmt::print("{:>16}: min {:>14.6g} max {:>14.6g}\n", in.header[j], s.data_min()[j],
                   s.data_max()[j]);
      out = a->inverse ? s.inverse_transform(in.values) : s.transform(in.values);
    } else {
      data::StandardScaler s;
      s.fit(fit.values);
      for (std::size_t j = 0; j < in.header.size(); ++j)
        fmt::print("{:>16}: mean {:>14.6g} std {:>14.6g}\n", in.header[j], s.mean()[j],
                   s.scale()[j]);
      out = a->inverse ? s.inverse_transform(in.values) : s.transform(in.values);
    }
    data::write_csv(a->out, in.header, out);
    fmt::print("wrote {} rows to {}\n", out.size(0), a->out);
  });
}

}  // namespace bnorm::cli
