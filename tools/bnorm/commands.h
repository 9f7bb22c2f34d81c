// The subcommands of the bnorm CLI, one file each (cmd_<verb>.cc).
#pragma once

#include <CLI/CLI.hpp>

namespace bnorm::cli {

void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_scale_command(CLI::App& app);
void add_bikes_command(CLI::App& app);

/// An option check: the number given is at least `lo` ("--steps: must be >= 1, got 0"), so
/// that a count of 0 or a negative one is an error rather than a silent default or an empty
/// run. Text that is not a number passes through to CLI11's own conversion error.
CLI::Validator at_least(double lo);

}  // namespace bnorm::cli
