#include "tokenizer/chat_encode.h"

#include <algorithm>
#include <charconv>
#include <string>
#include <string_view>

#include "base/error.h"

namespace skiff {

namespace {

// Stands in for message i's content; record and unit separators appear in no template.
std::string marker(size_t i) {
  std::string m(1, '\x1e');
  m += std::to_string(i);
  m += '\x1f';
  return m;
}

std::string_view trimmed(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// Whether `s` occurs in `text` at `pos`.
bool occurs_at(std::string_view text, size_t pos, std::string_view s) {
  return pos <= text.size() && text.substr(pos, s.size()) == s;
}

}  // namespace

std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                 const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const ChatRenderOptions& options) {
  const bool add_bos = tokenizer.vocab().add_bos;
  auto render = [&](const std::vector<ChatMessage>& list) {
    std::string text = apply_chat_template(tmpl, list, add_generation_prompt, options);
    return add_bos ? std::string(strip_bos_text(text, options.bos_token)) : text;
  };
  const std::string text = render(messages);
  const auto forged = std::find_if(messages.begin(), messages.end(),
                                   [&](const ChatMessage& m) { return tokenizer.has_control_text(m.content); });
  if (forged == messages.end()) return tokenizer.encode(text, add_bos, /*parse_special=*/true);

  // The template's own text: the rendering with a marker for each (non-empty) content.
  std::vector<ChatMessage> marked = messages;
  for (size_t i = 0; i < marked.size(); ++i)
    if (!marked[i].content.empty()) marked[i].content = marker(i);
  const std::string skeleton = render(marked);
  std::vector<std::string_view> pieces;  // template text before, between and after contents
  std::vector<size_t> order;             // the message whose content follows pieces[j]
  size_t from = 0;
  bool parsed = true;
  while (true) {
    const size_t open = skeleton.find('\x1e', from);
    pieces.push_back(std::string_view(skeleton).substr(from, open == std::string::npos ? std::string::npos : open - from));
    if (open == std::string::npos) break;
    const size_t close = skeleton.find('\x1f', open);
    size_t index = messages.size();
    if (close != std::string::npos) std::from_chars(skeleton.data() + open + 1, skeleton.data() + close, index);
    if (index >= messages.size()) {  // not a marker of ours
      parsed = false;
      break;
    }
    order.push_back(index);
    from = close + 1;
  }

  // Walk the real rendering: each piece, then the content as given or trimmed.
  std::vector<ByteRange> literal;
  const std::string_view rest(text);
  size_t pos = 0;
  bool ok = parsed && order.size() + 1 == pieces.size();
  for (size_t j = 0; j < pieces.size() && ok; ++j) {
    ok = occurs_at(rest, pos, pieces[j]);
    pos += pieces[j].size();
    if (!ok || j == order.size()) continue;
    const std::string_view content = messages[order[j]].content;
    const std::string_view next = pieces[j + 1];
    ok = false;
    for (std::string_view candidate : {content, trimmed(content)}) {
      if (occurs_at(rest, pos, candidate) && occurs_at(rest, pos + candidate.size(), next)) {
        literal.push_back({pos, pos + candidate.size()});
        pos += candidate.size();
        ok = true;
        break;
      }
    }
  }
  if (!ok || pos != text.size())
    fail("message {} holds special-token text and the '{}' chat template reshapes its content, so it cannot "
         "be kept as plain text; remove the special-token text",
         forged - messages.begin(), tmpl.name);
  return tokenizer.encode_with_literal(text, add_bos, literal);
}

}  // namespace skiff
