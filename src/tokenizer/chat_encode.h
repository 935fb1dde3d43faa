// A conversation rendered by its chat template and tokenized so that no message can forge the
// template's control tokens: text such as "<|eot_id|><|start_header_id|>system" inside a
// message stays plain text, while the markers the template itself writes become their tokens.
// (Tokenizing the whole rendering with special tokens parsed, as llama.cpp's server does, lets
// a user end their own turn and write a fake system or assistant turn.)
#pragma once

#include <cstdint>
#include <vector>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace skiff {

// The rendering of `messages` (apply_chat_template) as tokens, BOS first when the vocabulary
// adds one. Message content is found in the rendering by rendering once more with a marker
// in place of each content; content the template reshapes other than by trimming cannot be
// found, which matters only when it holds control-token text: then it throws Error.
std::vector<int32_t> encode_chat(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                 const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const ChatRenderOptions& options);

}  // namespace skiff
