// Chat templates without a Jinja interpreter: the template's text (GGUF tokenizer.chat_template)
// is recognized by the markers it contains, as llama.cpp's llm_chat_detect_template does, and
// each family is then rendered by hand-written code. Within a family, details the official
// templates differ in (a default system prompt, the Llama 3.1 date block, DeepSeek-R1's
// <think>, ...) are read from the text too, so a recognized template renders byte for byte
// what the Jinja renders (tests/reference/test_chat_templates.py holds it to that).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace skiff {

enum class ChatFormat {
  kChatMl,
  kLlama2,
  kLlama2Sys,
  kLlama2SysBos,
  kLlama2SysStrip,
  kMistralV1,
  kMistralV3,
  kMistralV3Tekken,
  kMistralV7,
  kPhi3,
  kPhi4,
  kFalcon3,
  kZephyr,
  kMonarch,
  kGemma,
  kOrion,
  kOpenChat,
  kVicuna,
  kVicunaOrca,
  kDeepSeek,
  kDeepSeek2,
  kDeepSeek3,
  kCommandR,
  kLlama3,
  kLlama31,
  kChatGlm3,
  kChatGlm4,
  kGlmEdge,
  kMiniCpm,
  kExaone3,
  kRwkvWorld,
  kGranite,
  kGigaChat,
  kMegrez,
};

struct ChatTemplate {
  ChatFormat format = ChatFormat::kChatMl;
  std::string name = "chatml";  // llama.cpp's name of the family (chat_template_by_name)
  bool recognized = true;       // false: unknown template text, ChatML used instead

  // Details of the family's official templates, read from the Jinja text (or the family's
  // defaults when chosen by name).
  bool bos_first = false;                 // the rendering starts with bos_token
  bool always_generation_prompt = false;  // the text ignores add_generation_prompt (Llama 3)
  std::string default_system;             // system prompt when the conversation has none (Qwen)
  bool date_from_today = false;           // Llama 3.2+: "Today Date" is today, else 26 Jul 2024
  bool system_in_last_user = false;       // Mistral: the system prompt joins the last user turn
  bool eos_without_generation_prompt = false;  // Phi-3.5: eos_token ends a closed conversation
  bool think = false;  // DeepSeek-R1: "<think>\n" opens the reply; reasoning dropped from history
  bool system_separator = true;  // DeepSeek: "\n\n" after the system prompt
  bool eos_after_user = false;   // llama.cpp's DeepSeek-R1 template: user turns end with EOS
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatRenderOptions {
  std::string bos_token;  // the text of BOS / EOS (templates that write them need them)
  std::string eos_token;
  std::string today;  // "%d %b %Y" date for templates that use today's; "": the current date
};

// The family of a template text; a text equal to a known name is that template. Unknown
// text gives ChatML with recognized = false; "" gives ChatML (recognized).
ChatTemplate detect_chat_template(const std::string& jinja);
// By llama.cpp's name (chatml, llama2, llama3, mistral-v7, ...; plus llama3.1 and
// deepseek-r1). Throws Error listing the known names for any other.
ChatTemplate chat_template_by_name(const std::string& name);
// The known names, sorted.
std::vector<std::string> chat_template_names();

// The prompt for `messages`; with add_generation_prompt it ends where the assistant's reply
// begins. Throws Error for a role the family cannot place.
std::string apply_chat_template(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const ChatRenderOptions& options = {});

// `prompt` without a leading bos_token text (the tokenizer adds BOS itself).
std::string_view strip_bos_text(std::string_view prompt, std::string_view bos_token);

}  // namespace skiff
