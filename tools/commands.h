// commands.h — the subcommands of the `stagformer` binary, one registration function each.
//
// Each tools/cmd_<name>.cpp defines add_<name>_command(), which adds a CLI11 subcommand with its
// options and a callback that runs it. tools/main.cpp calls them all. Callbacks report problems
// by throwing sf::Error; main prints "stagformer <command>: error: <message>" and exits 1.
#pragma once

#include <CLI/CLI.hpp>

namespace sf::cli {

void add_prepare_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_plot_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_bench_train_command(CLI::App& app);
void add_serve_command(CLI::App& app);

}  // namespace sf::cli
