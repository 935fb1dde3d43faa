// What `skiff chat` and `skiff chat-template` share: choosing the chat template.
#pragma once

#include <string>

#include "tokenizer/chat_template.h"

namespace skiff::cli {

// --chat-template NAME when given (Error for an unknown name), else the model's template
// text recognized; an unrecognized text gives ChatML and a warning on stderr.
ChatTemplate choose_chat_template(const std::string& model_template, const std::string& name);

}  // namespace skiff::cli
