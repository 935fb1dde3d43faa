// `skiff <command>`: thin entry points over the engine. Errors from any layer end here as one
// line "error: ..." on stderr and a non-zero exit.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/llama_aliases.h"
#include "dist/link.h"

int main(int argc, char** argv) {
  CLI::App app{"skiff: fast LLaMA-family inference on the CPU, with early exit"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");
  skiff::cli::register_commands(app);
  std::vector<std::string> args = skiff::cli::expand_llama_aliases(argc, argv);
  std::vector<char*> arg_pointers;
  for (std::string& a : args) arg_pointers.push_back(a.data());
  try {
    app.parse(static_cast<int>(arg_pointers.size()), arg_pointers.data());
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    for (char& ch : message) if (ch == '\n') ch = ' ';
    std::fprintf(stderr, "error: %s (see skiff --help)\n", message.c_str());
    return 2;
  } catch (const skiff::Error& e) {
    // Under mpirun (pipeline stages) the other ranks would wait for this one: end them all.
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s%s\n", skiff::dist::error_prefix().c_str(), e.what());
    skiff::dist::abort_job_after_error(1);
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: %sout of memory\n", skiff::dist::error_prefix().c_str());
    skiff::dist::abort_job_after_error(1);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s%s\n", skiff::dist::error_prefix().c_str(), e.what());
    skiff::dist::abort_job_after_error(1);
    return 1;
  }
  return 0;
}
