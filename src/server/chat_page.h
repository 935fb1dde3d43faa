// The small chat page `skiff serve` answers at GET /: plain HTML and JavaScript compiled into
// the binary (no build step, no external requests). It streams replies from
// /v1/chat/completions and shows tokens/s.
#pragma once

#include <string>

namespace skiff::server {

const std::string& chat_page_html();

}  // namespace skiff::server
