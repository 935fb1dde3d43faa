// Chat template recognition: every real template in shared/models/chat-templates/ is
// recognized as the family llama.cpp (or skiff's variant of it) gives it; names select
// families; an unknown name lists the known ones. Rendering itself is held to the Jinja
// byte for byte by tests/reference/test_chat_templates.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "base/error.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"

namespace skiff {
namespace {

// The chat templates folder in the shared data.
std::filesystem::path templates_dir() { return test::shared_path("models/chat-templates"); }

std::string read_file(const std::filesystem::path& p) { return test::read_text(p.string()); }

TEST(ChatTemplate, DetectsEveryTemplateFile) {
  const std::map<std::string, std::string> expected = {
      {"CohereForAI-c4ai-command-r-plus-tool_use", "command-r"},
      {"CohereForAI-c4ai-command-r7b-12-2024-tool_use", "command-r"},
      {"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "chatml"},
      {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "chatml"},
      {"Qwen-Qwen2.5-7B-Instruct", "chatml"},
      {"deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "deepseek3"},
      {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek3"},
      {"fireworks-ai-llama-3-firefunction-v2", "llama3"},
      {"google-gemma-2-2b-it", "gemma"},
      {"llama-cpp-deepseek-r1", "deepseek3"},
      {"meetkai-functionary-medium-v3.1", "llama3.1"},
      {"meetkai-functionary-medium-v3.2", "llama3"},
      {"meta-llama-Llama-3.1-8B-Instruct", "llama3.1"},
      {"meta-llama-Llama-3.2-3B-Instruct", "llama3.1"},
      {"meta-llama-Llama-3.3-70B-Instruct", "llama3.1"},
      {"meta-llama-Meta-Llama-3-8B-Instruct", "llama3"},
      {"microsoft-Phi-3.5-mini-instruct", "phi3"},
      {"mistralai-Mistral-Nemo-Instruct-2407", "mistral-v3-tekken"},
  };
  const std::filesystem::path dir = templates_dir();
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".jinja") continue;
    const std::string stem = entry.path().stem().string();
    auto it = expected.find(stem);
    ASSERT_NE(it, expected.end()) << "no expectation for " << stem;
    const ChatTemplate t = detect_chat_template(read_file(entry.path()));
    EXPECT_TRUE(t.recognized) << stem;
    EXPECT_EQ(t.name, it->second) << stem;
    ++seen;
  }
  EXPECT_EQ(seen, static_cast<int>(expected.size()));
}

TEST(ChatTemplate, VariantsReadFromTheText) {
  const std::filesystem::path dir = templates_dir();
  auto detect = [&](const char* stem) {
    return detect_chat_template(read_file(dir / (std::string(stem) + ".jinja")));
  };
  EXPECT_FALSE(detect("meta-llama-Llama-3.1-8B-Instruct").date_from_today);
  EXPECT_TRUE(detect("meta-llama-Llama-3.2-3B-Instruct").date_from_today);
  EXPECT_TRUE(detect("meta-llama-Meta-Llama-3-8B-Instruct").always_generation_prompt);
  EXPECT_FALSE(detect("Qwen-Qwen2.5-7B-Instruct").default_system.empty());
  EXPECT_TRUE(detect("deepseek-ai-DeepSeek-R1-Distill-Llama-8B").think);
  EXPECT_TRUE(detect("llama-cpp-deepseek-r1").eos_after_user);
  EXPECT_TRUE(detect("mistralai-Mistral-Nemo-Instruct-2407").system_in_last_user);
  EXPECT_FALSE(detect("microsoft-Phi-3.5-mini-instruct").bos_first);
}

TEST(ChatTemplate, NoTemplateIsChatMlAndUnknownTextIsFlagged) {
  ChatTemplate none = detect_chat_template("");
  EXPECT_TRUE(none.recognized);
  EXPECT_EQ(none.format, ChatFormat::kChatMl);
  ChatTemplate unknown = detect_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_FALSE(unknown.recognized);
  EXPECT_EQ(unknown.format, ChatFormat::kChatMl);
}

TEST(ChatTemplate, ByName) {
  for (const std::string& name : chat_template_names()) {
    EXPECT_EQ(chat_template_by_name(name).name, name);
    EXPECT_EQ(detect_chat_template(name).name, name);  // llama.cpp accepts a name as the text
  }
  try {
    chat_template_by_name("llama9");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("llama9"), std::string::npos);
    EXPECT_NE(msg.find("chatml"), std::string::npos);
    EXPECT_NE(msg.find("mistral-v7"), std::string::npos);
  }
}

TEST(ChatTemplate, RendersChatMlAndLlama3) {
  const std::vector<ChatMessage> chat = {
      {"system", "S"}, {"user", "U"}, {"assistant", " A "}, {"user", "V"}};
  EXPECT_EQ(
      apply_chat_template(chat_template_by_name("chatml"), chat, true),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n A "
      "<|im_end|>\n<|im_start|>user\nV<|im_end|>\n<|im_start|>assistant\n");
  ChatRenderOptions o{"<|begin_of_text|>", "<|eot_id|>", ""};
  EXPECT_EQ(apply_chat_template(chat_template_by_name("llama3"), {{"user", " U "}}, false, o),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>");
  EXPECT_EQ(apply_chat_template(chat_template_by_name("llama3.1"), {{"user", "U"}}, true, o),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
            "Date: December "
            "2023\nToday Date: 26 Jul "
            "2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(strip_bos_text("<s>[INST] hi", "<s>"), "[INST] hi");
  EXPECT_EQ(strip_bos_text("[INST] hi", "<s>"), "[INST] hi");
  EXPECT_EQ(strip_bos_text("<s>x", ""), "<s>x");
}

}  // namespace
}  // namespace skiff
