#include "tokenizer/chat_template.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>

#include "base/error.h"

namespace skiff {

namespace {

struct Named {
  const char* name;
  ChatFormat format;
};
// llama.cpp's names, then skiff's two for the variants llama.cpp folds into a family.
constexpr Named kNames[] = {
    {"chatml", ChatFormat::kChatMl},
    {"llama2", ChatFormat::kLlama2},
    {"llama2-sys", ChatFormat::kLlama2Sys},
    {"llama2-sys-bos", ChatFormat::kLlama2SysBos},
    {"llama2-sys-strip", ChatFormat::kLlama2SysStrip},
    {"mistral-v1", ChatFormat::kMistralV1},
    {"mistral-v3", ChatFormat::kMistralV3},
    {"mistral-v3-tekken", ChatFormat::kMistralV3Tekken},
    {"mistral-v7", ChatFormat::kMistralV7},
    {"phi3", ChatFormat::kPhi3},
    {"phi4", ChatFormat::kPhi4},
    {"falcon3", ChatFormat::kFalcon3},
    {"zephyr", ChatFormat::kZephyr},
    {"monarch", ChatFormat::kMonarch},
    {"gemma", ChatFormat::kGemma},
    {"orion", ChatFormat::kOrion},
    {"openchat", ChatFormat::kOpenChat},
    {"vicuna", ChatFormat::kVicuna},
    {"vicuna-orca", ChatFormat::kVicunaOrca},
    {"deepseek", ChatFormat::kDeepSeek},
    {"deepseek2", ChatFormat::kDeepSeek2},
    {"deepseek3", ChatFormat::kDeepSeek3},
    {"command-r", ChatFormat::kCommandR},
    {"llama3", ChatFormat::kLlama3},
    {"chatglm3", ChatFormat::kChatGlm3},
    {"chatglm4", ChatFormat::kChatGlm4},
    {"glmedge", ChatFormat::kGlmEdge},
    {"minicpm", ChatFormat::kMiniCpm},
    {"exaone3", ChatFormat::kExaone3},
    {"rwkv-world", ChatFormat::kRwkvWorld},
    {"granite", ChatFormat::kGranite},
    {"gigachat", ChatFormat::kGigaChat},
    {"megrez", ChatFormat::kMegrez},
    {"llama3.1", ChatFormat::kLlama31},
    {"deepseek-r1", ChatFormat::kDeepSeek3},
};

const char* name_of(ChatFormat f) {
  for (const Named& n : kNames)
    if (n.format == f) return n.name;
  return "chatml";
}

// The defaults of a family's official template, for a template chosen by name.
ChatTemplate make(ChatFormat f, const char* name) {
  ChatTemplate t;
  t.format = f;
  t.name = name;
  switch (f) {
    case ChatFormat::kLlama2:
    case ChatFormat::kLlama2Sys:
    case ChatFormat::kLlama2SysBos:
    case ChatFormat::kLlama2SysStrip:
    case ChatFormat::kMistralV1:
    case ChatFormat::kMistralV3:
    case ChatFormat::kMistralV3Tekken:
    case ChatFormat::kMistralV7:
    case ChatFormat::kLlama3:
    case ChatFormat::kLlama31:
    case ChatFormat::kGemma:
    case ChatFormat::kDeepSeek3:
    case ChatFormat::kCommandR:
      t.bos_first = true;
      break;
    default:
      break;
  }
  if (std::string_view(name) == "deepseek-r1") {
    t.think = true;
    t.system_separator = false;
  }
  return t;
}

ChatFormat detect_format(const std::string& t, bool& found) {
  auto has = [&t](std::string_view s) { return t.find(s) != std::string::npos; };
  found = true;
  if (has("<|im_start|>")) return has("<|im_sep|>") ? ChatFormat::kPhi4 : ChatFormat::kChatMl;
  if (t.rfind("mistral", 0) == 0 || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) return ChatFormat::kMistralV7;
    if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
      if (has(" [INST]")) return ChatFormat::kMistralV1;
      if (has("\"[INST]\"")) return ChatFormat::kMistralV3Tekken;
      return ChatFormat::kMistralV3;
    }
    if (has("content.strip()")) return ChatFormat::kLlama2SysStrip;
    if (has("bos_token + '[INST]")) return ChatFormat::kLlama2SysBos;
    if (has("<<SYS>>")) return ChatFormat::kLlama2Sys;
    return ChatFormat::kLlama2;
  }
  if (has("<|assistant|>") && has("<|end|>")) return ChatFormat::kPhi3;
  if (has("<|assistant|>") && has("<|user|>"))
    return has("</s>") ? ChatFormat::kFalcon3 : ChatFormat::kGlmEdge;
  if (has("<|user|>") && has("<|endoftext|>")) return ChatFormat::kZephyr;
  if (has("bos_token + message['role']")) return ChatFormat::kMonarch;
  if (has("<start_of_turn>")) return ChatFormat::kGemma;
  if (has("'\\n\\nAssistant: ' + eos_token")) return ChatFormat::kOrion;
  if (has("GPT4 Correct ")) return ChatFormat::kOpenChat;
  if (has("USER: ") && has("ASSISTANT: "))
    return has("SYSTEM: ") ? ChatFormat::kVicunaOrca : ChatFormat::kVicuna;
  if (has("### Instruction:") && has("<|EOT|>")) return ChatFormat::kDeepSeek;
  if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) return ChatFormat::kCommandR;
  if (has("<|start_header_id|>") && has("<|end_header_id|>"))
    return has("Cutting Knowledge Date: December 2023\\n") ||
                   has("Cutting Knowledge Date: December 2023\n")
               ? ChatFormat::kLlama31
               : ChatFormat::kLlama3;
  if (has("[gMASK]sop")) return ChatFormat::kChatGlm3;
  if (has("[gMASK]<sop>")) return ChatFormat::kChatGlm4;
  if (has("<用户>")) return ChatFormat::kMiniCpm;
  if (has("'Assistant: ' + message['content'] + eos_token")) return ChatFormat::kDeepSeek2;
  if (has("<｜Assistant｜>") && has("<｜User｜>") && has("<｜end▁of▁sentence｜>"))
    return ChatFormat::kDeepSeek3;
  if (has("[|system|]") && has("[|assistant|]") && has("[|endofturn|]"))
    return ChatFormat::kExaone3;
  if (has("rwkv-world")) return ChatFormat::kRwkvWorld;
  if (has("<|start_of_role|>")) return ChatFormat::kGranite;
  if (has("message['role'] + additional_special_tokens[0] + message['content'] + "
          "additional_special_tokens[1]"))
    return ChatFormat::kGigaChat;
  if (has("<|role_start|>")) return ChatFormat::kMegrez;
  found = false;
  return ChatFormat::kChatMl;
}

// Python's str.strip() for ASCII whitespace (Jinja's trim filter).
std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string today_date() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%d %b %Y", &tm);
  return buf;
}

[[noreturn]] void bad_role(const ChatTemplate& t, const std::string& role) {
  fail("chat template {}: cannot place a message with role '{}'", t.name, role);
}

}  // namespace

std::vector<std::string> chat_template_names() {
  std::vector<std::string> names;
  for (const Named& n : kNames) names.emplace_back(n.name);
  std::sort(names.begin(), names.end());
  return names;
}

ChatTemplate chat_template_by_name(const std::string& name) {
  for (const Named& n : kNames)
    if (name == n.name) return make(n.format, n.name);
  std::string known;
  for (const std::string& n : chat_template_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown chat template '{}' (known: {})", name, known);
}

ChatTemplate detect_chat_template(const std::string& jinja) {
  if (jinja.empty()) return make(ChatFormat::kChatMl, "chatml");
  for (const Named& n : kNames)
    if (jinja == n.name) return make(n.format, n.name);
  bool found = false;
  const ChatFormat f = detect_format(jinja, found);
  ChatTemplate t;
  t.format = f;
  t.name = name_of(f);
  t.recognized = found;
  if (!found) return t;
  auto has = [&jinja](std::string_view s) { return jinja.find(s) != std::string::npos; };
  t.bos_first = has("bos_token") && f != ChatFormat::kMonarch && f != ChatFormat::kLlama2SysBos &&
                f != ChatFormat::kOrion && f != ChatFormat::kGigaChat;
  t.always_generation_prompt = f == ChatFormat::kLlama3 && !has("add_generation_prompt");
  if (has("You are Qwen, created by Alibaba Cloud. You are a helpful assistant."))
    t.default_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
  t.date_from_today = has("strftime_now");
  t.system_in_last_user = (f == ChatFormat::kMistralV1 || f == ChatFormat::kMistralV3 ||
                           f == ChatFormat::kMistralV3Tekken) &&
                          has("loop.last and system_message");
  t.eos_without_generation_prompt = f == ChatFormat::kPhi3 && has("eos_token");
  if (f == ChatFormat::kDeepSeek3) {
    t.think = has("<think>");
    t.system_separator = !has("{{ns.system_prompt}}");
    t.eos_after_user = has("'<｜User｜>' + message['content'] + '<｜end▁of▁sentence｜>'");
  }
  return t;
}

std::string_view strip_bos_text(std::string_view prompt, std::string_view bos_token) {
  if (!bos_token.empty() && prompt.substr(0, bos_token.size()) == bos_token)
    prompt.remove_prefix(bos_token.size());
  return prompt;
}

std::string apply_chat_template(const ChatTemplate& t, const std::vector<ChatMessage>& input,
                                bool add_generation_prompt, const ChatRenderOptions& options) {
  const bool gen = add_generation_prompt || t.always_generation_prompt;
  const std::string eos = options.eos_token.empty() ? "</s>" : options.eos_token;
  std::vector<ChatMessage> chat = input;
  if (!t.default_system.empty() && (chat.empty() || chat[0].role != "system"))
    chat.insert(chat.begin(), ChatMessage{"system", t.default_system});
  std::string s;
  if (t.bos_first) s += options.bos_token;
  using F = ChatFormat;
  switch (t.format) {
    case F::kChatMl:
      for (const ChatMessage& m : chat)
        s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (gen) s += "<|im_start|>assistant\n";
      break;
    case F::kMistralV7:
      for (const ChatMessage& m : chat) {
        if (m.role == "system")
          s += "[SYSTEM_PROMPT] " + m.content + "[/SYSTEM_PROMPT]";
        else if (m.role == "user")
          s += "[INST] " + m.content + "[/INST]";
        else
          s += " " + m.content + eos;
      }
      break;
    case F::kMistralV1:
    case F::kMistralV3:
    case F::kMistralV3Tekken: {
      const std::string lead = t.format == F::kMistralV1 ? " " : "";
      const std::string trail = t.format == F::kMistralV3Tekken ? "" : " ";
      const bool trim_assistant = t.format == F::kMistralV3;
      if (t.system_in_last_user) {
        // The official templates: the system prompt opens the LAST user turn.
        std::string system;
        size_t last_user = chat.size();
        for (size_t i = 0; i < chat.size(); ++i) {
          if (chat[i].role == "system" && i == 0)
            system = chat[i].content;
          else if (chat[i].role == "user")
            last_user = i;
        }
        for (size_t i = 0; i < chat.size(); ++i) {
          const ChatMessage& m = chat[i];
          if (m.role == "system" && i == 0) continue;
          if (m.role == "user") {
            s += lead + "[INST]" + trail;
            if (i == last_user && !chat.empty() && chat[0].role == "system") s += system + "\n\n";
            s += m.content + lead + "[/INST]";
          } else if (m.role == "assistant") {
            s += trail + (trim_assistant ? trim(m.content) : m.content) + eos;
          } else {
            bad_role(t, m.role);
          }
        }
        break;
      }
      bool inside = false;
      for (const ChatMessage& m : chat) {
        if (!inside) {
          s += lead + "[INST]" + trail;
          inside = true;
        }
        if (m.role == "system")
          s += m.content + "\n\n";
        else if (m.role == "user")
          s += m.content + lead + "[/INST]";
        else {
          s += trail + (trim_assistant ? trim(m.content) : m.content) + eos;
          inside = false;
        }
      }
      break;
    }
    case F::kLlama2:
    case F::kLlama2Sys:
    case F::kLlama2SysBos:
    case F::kLlama2SysStrip: {
      const bool system_ok = t.format != F::kLlama2;
      const bool bos_inside = t.format == F::kLlama2SysBos;
      const bool strip = t.format == F::kLlama2SysStrip;
      bool inside = true;
      s += "[INST] ";
      for (const ChatMessage& m : chat) {
        const std::string content = strip ? trim(m.content) : m.content;
        if (!inside) {
          inside = true;
          s += bos_inside ? (options.bos_token.empty() ? "<s>" : options.bos_token) + "[INST] "
                          : "[INST] ";
        }
        if (m.role == "system")
          s += system_ok ? "<<SYS>>\n" + content + "\n<</SYS>>\n\n" : content + "\n";
        else if (m.role == "user")
          s += content + " [/INST]";
        else {
          s += content + eos;
          inside = false;
        }
      }
      break;
    }
    case F::kPhi3:
      for (const ChatMessage& m : chat) {
        if (m.role == "system" && m.content.empty()) continue;
        s += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      }
      if (gen)
        s += "<|assistant|>\n";
      else if (t.eos_without_generation_prompt)
        s += options.eos_token;
      break;
    case F::kPhi4:
      for (const ChatMessage& m : chat)
        s += "<|im_start|>" + m.role + "<|im_sep|>" + m.content + "<|im_end|>";
      if (gen) s += "<|im_start|>assistant<|im_sep|>";
      break;
    case F::kFalcon3:
      for (const ChatMessage& m : chat) s += "<|" + m.role + "|>\n" + m.content + "\n";
      if (gen) s += "<|assistant|>\n";
      break;
    case F::kZephyr:
      for (const ChatMessage& m : chat) s += "<|" + m.role + "|>\n" + m.content + "<|endoftext|>\n";
      if (gen) s += "<|assistant|>\n";
      break;
    case F::kMonarch:
      for (size_t i = 0; i < chat.size(); ++i)
        s += (i == 0 ? "" : "<s>") + chat[i].role + "\n" + chat[i].content + "</s>\n";
      if (gen) s += "<s>assistant\n";
      break;
    case F::kGemma: {
      // Gemma has no system role: the system prompt opens the first user turn.
      std::string system;
      for (const ChatMessage& m : chat) {
        if (m.role == "system") {
          system = trim(m.content);
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : m.role;
        s += "<start_of_turn>" + role + "\n";
        if (!system.empty() && role != "model") {
          s += system + "\n\n";
          system.clear();
        }
        s += trim(m.content) + "<end_of_turn>\n";
      }
      if (gen) s += "<start_of_turn>model\n";
      break;
    }
    case F::kOrion: {
      std::string system;
      for (const ChatMessage& m : chat) {
        if (m.role == "system") {
          system = m.content;
        } else if (m.role == "user") {
          s += "Human: ";
          if (!system.empty()) s += system + "\n\n";
          system.clear();
          s += m.content + "\n\nAssistant: </s>";
        } else {
          s += m.content + "</s>";
        }
      }
      break;
    }
    case F::kOpenChat:
      for (const ChatMessage& m : chat) {
        if (m.role == "system") {
          s += m.content + "<|end_of_turn|>";
        } else {
          std::string role = m.role;
          if (!role.empty())
            role[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(role[0])));
          s += "GPT4 Correct " + role + ": " + m.content + "<|end_of_turn|>";
        }
      }
      if (gen) s += "GPT4 Correct Assistant:";
      break;
    case F::kVicuna:
    case F::kVicunaOrca:
      for (const ChatMessage& m : chat) {
        if (m.role == "system")
          s += t.format == F::kVicunaOrca ? "SYSTEM: " + m.content + "\n" : m.content + "\n\n";
        else if (m.role == "user")
          s += "USER: " + m.content + "\n";
        else if (m.role == "assistant")
          s += "ASSISTANT: " + m.content + "</s>\n";
      }
      if (gen) s += "ASSISTANT:";
      break;
    case F::kDeepSeek:
      for (const ChatMessage& m : chat) {
        if (m.role == "system")
          s += m.content;
        else if (m.role == "user")
          s += "### Instruction:\n" + m.content + "\n";
        else if (m.role == "assistant")
          s += "### Response:\n" + m.content + "\n<|EOT|>\n";
      }
      if (gen) s += "### Response:\n";
      break;
    case F::kCommandR:
      for (const ChatMessage& m : chat) {
        if (m.role == "system")
          s +=
              "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>" + trim(m.content) + "<|END_OF_TURN_TOKEN|>";
        else if (m.role == "user")
          s += "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>" + trim(m.content) + "<|END_OF_TURN_TOKEN|>";
        else if (m.role == "assistant")
          s += "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>" + trim(m.content) +
               "<|END_OF_TURN_TOKEN|>";
      }
      if (gen) s += "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";
      break;
    case F::kLlama3:
    case F::kLlama31: {
      size_t first = 0;
      if (t.format == F::kLlama31) {
        // The system turn is always there, with the knowledge cut-off and the date.
        std::string system;
        if (!chat.empty() && chat[0].role == "system") {
          system = trim(chat[0].content);
          first = 1;
        }
        std::string date = "26 Jul 2024";
        if (t.date_from_today) date = options.today.empty() ? today_date() : options.today;
        s += "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
             "2023\nToday Date: " +
             date + "\n\n" + system + "<|eot_id|>";
      }
      for (size_t i = first; i < chat.size(); ++i)
        s += "<|start_header_id|>" + chat[i].role + "<|end_header_id|>\n\n" +
             trim(chat[i].content) + "<|eot_id|>";
      if (gen) s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
    case F::kChatGlm3:
      s += "[gMASK]sop";
      for (const ChatMessage& m : chat) s += "<|" + m.role + "|>\n " + m.content;
      if (gen) s += "<|assistant|>";
      break;
    case F::kChatGlm4:
    case F::kGlmEdge:
      if (t.format == F::kChatGlm4) s += "[gMASK]<sop>";
      for (const ChatMessage& m : chat) s += "<|" + m.role + "|>\n" + m.content;
      if (gen) s += "<|assistant|>";
      break;
    case F::kMiniCpm:
      for (const ChatMessage& m : chat) {
        if (m.role == "user")
          s += "<用户>" + trim(m.content) + "<AI>";
        else
          s += trim(m.content);
      }
      break;
    case F::kDeepSeek2:
      for (const ChatMessage& m : chat) {
        if (m.role == "system")
          s += m.content + "\n\n";
        else if (m.role == "user")
          s += "User: " + m.content + "\n\n";
        else if (m.role == "assistant")
          s += "Assistant: " + m.content + "<｜end▁of▁sentence｜>";
      }
      if (gen) s += "Assistant:";
      break;
    case F::kDeepSeek3: {
      const std::string end = "<｜end▁of▁sentence｜>";
      if (!t.system_separator) {
        // DeepSeek-R1's templates: the last system prompt first, as it is.
        std::string system;
        for (const ChatMessage& m : chat)
          if (m.role == "system") system = m.content;
        s += system;
      }
      for (const ChatMessage& m : chat) {
        if (m.role == "system") {
          if (t.system_separator) s += m.content + "\n\n";
        } else if (m.role == "user") {
          s += "<｜User｜>" + m.content + (t.eos_after_user ? end : "");
        } else if (m.role == "assistant") {
          std::string content = m.content;
          const size_t think_end = content.rfind("</think>");
          if (t.think && think_end != std::string::npos) content = content.substr(think_end + 8);
          s += "<｜Assistant｜>" + content + end;
        }
      }
      if (gen) s += t.think ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>";
      break;
    }
    case F::kExaone3:
      for (const ChatMessage& m : chat) {
        if (m.role == "system")
          s += "[|system|]" + trim(m.content) + "[|endofturn|]\n";
        else if (m.role == "user")
          s += "[|user|]" + trim(m.content) + "\n";
        else if (m.role == "assistant")
          s += "[|assistant|]" + trim(m.content) + "[|endofturn|]\n";
      }
      if (gen) s += "[|assistant|]";
      break;
    case F::kRwkvWorld:
      for (const ChatMessage& m : chat) {
        if (m.role == "user")
          s += "User: " + m.content + "\n\nAssistant:";
        else
          s += m.content + "\n\n";
      }
      break;
    case F::kGranite:
      for (const ChatMessage& m : chat) {
        s += "<|start_of_role|>" + m.role + "<|end_of_role|>";
        if (m.role == "assistant_tool_call") s += "<|tool_call|>";
        s += m.content + "<|end_of_text|>\n";
      }
      if (gen) s += "<|start_of_role|>assistant<|end_of_role|>\n";
      break;
    case F::kGigaChat: {
      const bool has_system = !chat.empty() && chat[0].role == "system";
      s += "<s>";
      if (has_system) s += chat[0].content + "<|message_sep|>";
      for (size_t i = has_system ? 1 : 0; i < chat.size(); ++i) {
        if (chat[i].role == "user")
          s += "user<|role_sep|>" + chat[i].content +
               "<|message_sep|>available functions<|role_sep|>[]<|message_sep|>";
        else if (chat[i].role == "assistant")
          s += "assistant<|role_sep|>" + chat[i].content + "<|message_sep|>";
      }
      if (gen) s += "assistant<|role_sep|>";
      break;
    }
    case F::kMegrez:
      for (const ChatMessage& m : chat)
        s += "<|role_start|>" + m.role + "<|role_end|>" + m.content + "<|turn_end|>";
      if (gen) s += "<|role_start|>assistant<|role_end|>";
      break;
  }
  return s;
}

}  // namespace skiff
