// bnorm: the command-line tool. `bnorm --help` lists the subcommands; each has --help.
//   bnorm compare --quick     the BN vs no-BN experiments on Fashion-MNIST, with a report
//   bnorm train / eval        train a network (with or without BN) and evaluate a checkpoint
//   bnorm scale / bikes       the seed article's preprocessing and its bike-price example
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>

#include "bnorm/error.h"
#include "commands.h"

namespace bnorm::cli {

CLI::Validator at_least(double lo) {
  return CLI::Validator(
      [lo](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0') return "";  // not a number: CLI11 reports it
        return v >= lo ? "" : fmt::format("must be >= {}, got {}", lo, text);
      },
      fmt::format(">= {}", lo));
}

}  // namespace bnorm::cli

int main(int argc, char** argv) {
  CLI::App app{
      "bnorm: Batch Normalization, exact and fast, and the experiments that show what it does"};
  app.require_subcommand(1);
  bnorm::cli::add_compare_command(app);
  bnorm::cli::add_train_command(app);
  bnorm::cli::add_eval_command(app);
  bnorm::cli::add_scale_command(app);
  bnorm::cli::add_bikes_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const bnorm::Error& e) {
    fmt::print(stderr, "bnorm: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
