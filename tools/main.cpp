// main.cpp — entry point of the `stagformer` command-line tool: dispatches to subcommands.
#include <cstdio>
#include <exception>

#include "commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "stagformer — train and run time-staggered Transformers (StagFormer) and their baselines.\n"
      "Run `stagformer <command> --help` for the options of a command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "stagformer 0.1");
  sf::cli::add_prepare_command(app);
  sf::cli::add_train_command(app);
  sf::cli::add_eval_command(app);
  sf::cli::add_generate_command(app);
  sf::cli::add_info_command(app);
  sf::cli::add_plot_command(app);
  sf::cli::add_bench_command(app);
  sf::cli::add_bench_train_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const sf::Error& e) {
    std::string command = app.get_subcommands().empty() ? "" : " " + app.get_subcommands()[0]->get_name();
    std::fprintf(stderr, "stagformer%s: error: %s\n", command.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stagformer: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
