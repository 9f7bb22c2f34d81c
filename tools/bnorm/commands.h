// The subcommands of the bnorm CLI, one file each (cmd_<verb>.cc).
#pragma once

#include <CLI/CLI.hpp>

namespace bnorm::cli {

void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_scale_command(CLI::App& app);
void add_bikes_command(CLI::App& app);

}  // namespace bnorm::cli
