#include "cli/chat_common.h"

#include <cstdio>

namespace skiff::cli {

ChatTemplate choose_chat_template(const std::string& model_template, const std::string& name) {
  if (!name.empty()) return chat_template_by_name(name);
  ChatTemplate t = detect_chat_template(model_template);
  if (!t.recognized)
    std::fprintf(stderr,
                 "warning: the model's chat template is not one skiff recognizes; using ChatML "
                 "(choose one with --chat-template NAME)\n");
  return t;
}

}  // namespace skiff::cli
