// skiff chat-template: render a conversation (JSON [{"role", "content"}, ...]) with a chat
// template and print the prompt, byte for byte, to stdout. A diagnostic: the golden test
// (tests/reference/test_chat_templates.py) compares it with the Jinja rendering.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cli/chat_common.h"
#include "cli/commands.h"
#include "cli/common.h"

namespace skiff::cli {
namespace {

struct ChatTemplateFlags {
  std::string template_file, template_name, messages_file, bos, eos, today;
  bool no_generation_prompt = false;
  bool detect_only = false;
};

void run_chat_template(const ChatTemplateFlags& f) {
  if (!f.template_file.empty() && !f.template_name.empty())
    fail("give --template-file or --chat-template, not both");
  ChatTemplate tmpl =
      f.template_name.empty()
          ? choose_chat_template(f.template_file.empty() ? "" : read_text_file(f.template_file), "")
          : chat_template_by_name(f.template_name);
  if (f.detect_only) {
    std::printf("%s\n", tmpl.recognized ? tmpl.name.c_str() : "unknown");
    return;
  }
  if (f.messages_file.empty())
    fail("--messages is required (a JSON array of {{\"role\", \"content\"}})");
  std::vector<ChatMessage> messages;
  try {
    const nlohmann::json j = nlohmann::json::parse(read_text_file(f.messages_file));
    for (const auto& m : j)
      messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", f.messages_file, e.what());
  }
  ChatRenderOptions options{f.bos, f.eos, f.today};
  const std::string prompt = apply_chat_template(tmpl, messages, !f.no_generation_prompt, options);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
}

}  // namespace

void register_chat_template(CLI::App& app) {
  auto flags = std::make_shared<ChatTemplateFlags>();
  CLI::App* cmd = app.add_subcommand(
      "chat-template", "diagnostic: print a conversation rendered with a chat template");
  cmd->group("");  // hidden from skiff --help
  cmd->add_option("--template-file", flags->template_file,
                  "the template's Jinja text (recognized like a model's)");
  cmd->add_option("--chat-template", flags->template_name,
                  "a template by name (chatml, llama3, ...)");
  cmd->add_option("--messages", flags->messages_file,
                  "JSON file: [{\"role\": ..., \"content\": ...}, ...]");
  cmd->add_flag("--no-generation-prompt", flags->no_generation_prompt,
                "do not open the assistant's reply");
  cmd->add_option("--bos", flags->bos, "the text of BOS");
  cmd->add_option("--eos", flags->eos, "the text of EOS");
  cmd->add_option("--today", flags->today,
                  "today's date for templates that print it (\"%d %b %Y\")");
  cmd->add_flag("--detect", flags->detect_only, "print the recognized family's name only");
  cmd->callback([flags] { run_chat_template(*flags); });
}

}  // namespace skiff::cli
