// main.cpp — entry point of the `stagformer` command-line tool: dispatches to subcommands.
#include <algorithm>
#include <new>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "suggest.h"

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
  sf::cli::add_serve_command(app);
  // A first word that is no command: name it and the nearest command (CLI11 would only say
  // that a subcommand is required).
  if (argc >= 2 && argv[1][0] != '-') {
    std::vector<std::string> commands;
    for (const CLI::App* sub : app.get_subcommands({})) commands.push_back(sub->get_name());
    if (std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
      const std::string near = sf::cli::nearest_word(argv[1], commands);
      std::fprintf(stderr, "stagformer: error: unknown command '%s'%s; the commands are:", argv[1],
                   near.empty() ? "" : (" (did you mean '" + near + "'?)").c_str());
      for (const std::string& c : commands) std::fprintf(stderr, " %s", c.c_str());
      std::fprintf(stderr, "\n");
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // An unknown option (CLI11 may first complain about a required one the typo hid): name it
    // and the nearest option of its command.
    const CLI::App* command = app.get_subcommands().empty() ? &app : app.get_subcommands()[0];
    std::vector<std::string> names;
    for (const CLI::Option* o : command->get_options())
      for (const std::string& n : o->get_lnames()) names.push_back("--" + n);
    for (const std::string& extra : command->remaining()) {
      if (extra.rfind("--", 0) != 0) continue;
      const std::string word = extra.substr(0, extra.find('='));
      const std::string near = sf::cli::nearest_word(word, names);
      std::fprintf(stderr, "stagformer%s: error: unknown option '%s'%s; see `stagformer%s --help`\n",
                   command == &app ? "" : (" " + command->get_name()).c_str(), word.c_str(),
                   near.empty() ? "" : (" (did you mean '" + near + "'?)").c_str(),
                   command == &app ? "" : (" " + command->get_name()).c_str());
      return 1;
    }
    return app.exit(e);
  } catch (const sf::Error& e) {
    std::string command = app.get_subcommands().empty() ? "" : " " + app.get_subcommands()[0]->get_name();
    std::fprintf(stderr, "stagformer%s: error: %s\n", command.c_str(), e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    // Not our bug: the input asked for more host memory than this machine has (sizes from files
    // are checked first, so this is a large but valid request).
    std::string command = app.get_subcommands().empty() ? "" : " " + app.get_subcommands()[0]->get_name();
    std::fprintf(stderr, "stagformer%s: error: out of host memory\n", command.c_str());
    return 1;
  } catch (const std::exception& e) {
    // Reserved for our bugs: every error a user can cause is an sf::Error.
    std::fprintf(stderr, "stagformer: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
