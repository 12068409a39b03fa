// api_error.h — an error the HTTP API answers with: the status, and OpenAI's error object
// ({"error": {"message", "type", "param", "code"}}) that names the problem and the field.
// Thrown by the request parsers (openai_request.h) and the server; never crashes the server.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace sf::serve {

class ApiError : public std::runtime_error {
 public:
  // `param`: the request field at fault ("" for none); `type`: OpenAI's error type
  // ("invalid_request_error" for any 4xx a client can fix).
  ApiError(int status, std::string message, std::string param = "",
           std::string type = "invalid_request_error", std::string code = "")
      : std::runtime_error(message),
        status_(status),
        param_(std::move(param)),
        type_(std::move(type)),
        code_(std::move(code)) {}

  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& type() const { return type_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string param_, type_, code_;
};

// {"error": {"message": ..., "type": ..., "param": ... or null, "code": ... or null}}
nlohmann::json error_body(const ApiError& error);

// A 400 for field `param`.
inline ApiError bad_field(const std::string& param, const std::string& message) {
  return ApiError(400, message, param);
}

}  // namespace sf::serve
