// Errors a client caused, in the OpenAI error shape:
//   {"error": {"message": ..., "type": "invalid_request_error", "param": ..., "code": ...}}
// with an HTTP 4xx status. Request parsing throws ApiError; the HTTP edge turns it (and any
// skiff::Error from deeper down, as a 400) into a response. A 500 means a bug in skiff.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace skiff::server {

struct ApiError : std::runtime_error {
  ApiError(int status, std::string type, std::string param, std::string code, const std::string& message)
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type;   // invalid_request_error, authentication_error, ...
  std::string param;  // the request field at fault, or ""
  std::string code;   // a machine-readable code, or ""

  nlohmann::json to_json() const {
    nlohmann::json e = {{"message", what()}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
    if (!param.empty()) e["param"] = param;
    if (!code.empty()) e["code"] = code;
    return {{"error", e}};
  }
};

// 400 invalid_request_error naming `param`.
template <typename... Args>
[[noreturn]] void bad_request(const std::string& param, fmt::format_string<Args...> format, Args&&... args) {
  throw ApiError(400, "invalid_request_error", param, "", fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace skiff::server
