// serve_api_test.cpp — the HTTP API's request parsing, chat template, stop strings and response
// bodies (src/serve/): every bad input a 400 naming its field; streamed text equal to the whole.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "serve/chat_template.h"
#include "serve/openai_request.h"
#include "serve/openai_response.h"
#include "serve/stop_strings.h"

namespace sf::serve {
namespace {

using nlohmann::json;

// The ApiError parsing a body gives, or fails the test.
template <class Parse>
ApiError error_of(Parse parse, const std::string& body) {
  try {
    parse(body);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << body;
  return ApiError(0, "");
}
ApiError completion_error(const std::string& body) { return error_of(parse_completion_request, body); }
ApiError chat_error(const std::string& body) { return error_of(parse_chat_request, body); }

TEST(ServeRequest, CompletionDefaultsAreOpenAis) {
  const CompletionRequest r = parse_completion_request(R"({"prompt": "Once upon"})");
  EXPECT_FALSE(r.prompt_is_ids);
  EXPECT_EQ(r.prompt_text, "Once upon");
  EXPECT_EQ(r.generation.max_tokens, 16);
  EXPECT_EQ(r.generation.sampling.temperature, 1.0);
  EXPECT_EQ(r.generation.sampling.top_p, 1.0);
  EXPECT_EQ(r.generation.sampling.top_k, 0);
  EXPECT_FALSE(r.generation.sampling.seed.has_value());
  EXPECT_FALSE(r.generation.stream);
  EXPECT_TRUE(r.generation.stop.empty());
}

TEST(ServeRequest, CompletionTakesEveryField) {
  const CompletionRequest r = parse_completion_request(R"({
      "model": "m", "prompt": [[1, 2, 3]], "max_tokens": 5, "temperature": 0, "top_p": 0.5,
      "top_k": 40, "seed": -3, "stop": "\n", "stream": true, "stream_options": {"include_usage": true},
      "n": 1, "best_of": 1, "echo": false, "logprobs": null, "suffix": null, "presence_penalty": 0,
      "frequency_penalty": 0.0, "logit_bias": {}, "user": "u"})");
  EXPECT_EQ(r.generation.model, "m");
  EXPECT_TRUE(r.prompt_is_ids);
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r.generation.max_tokens, 5);
  EXPECT_EQ(r.generation.sampling.temperature, 0.0);
  EXPECT_EQ(r.generation.sampling.top_p, 0.5);
  EXPECT_EQ(r.generation.sampling.top_k, 40);
  EXPECT_EQ(r.generation.sampling.seed, static_cast<uint64_t>(-3));
  EXPECT_EQ(r.generation.stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(r.generation.stream);
  EXPECT_TRUE(r.generation.include_usage);
  // A prompt array of one string; max_tokens null = no limit.
  const CompletionRequest s = parse_completion_request(R"({"prompt": ["hi"], "max_tokens": null})");
  EXPECT_EQ(s.prompt_text, "hi");
  EXPECT_FALSE(s.generation.max_tokens.has_value());
}

TEST(ServeRequest, EveryBadCompletionInputNamesItsField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt": "x", "max_token": 5})", "max_token"},        // a misspelt field
      {R"({"prompt": "x", "max_tokens": "5"})", "max_tokens"},    // wrong type
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},      // out of range
      {R"({"prompt": "x", "max_tokens": 2.5})", "max_tokens"},
      {R"({"prompt": "x", "temperature": 2.5})", "temperature"},
      {R"({"prompt": "x", "temperature": -1})", "temperature"},
      {R"({"prompt": "x", "top_p": 0})", "top_p"},
      {R"({"prompt": "x", "top_p": 1.5})", "top_p"},
      {R"({"prompt": "x", "top_k": -1})", "top_k"},
      {R"({"prompt": "x", "seed": "7"})", "seed"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "stop"},
      {R"({"prompt": "x", "stop": [""]})", "stop"},
      {R"({"prompt": "x", "stop": 5})", "stop"},
      {R"({"prompt": "x", "stream": "yes"})", "stream"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"x": 1}})", "stream_options.x"},
      {R"({"prompt": "x", "n": 2})", "n"},
      {R"({"prompt": "x", "best_of": 3})", "best_of"},
      {R"({"prompt": "x", "echo": true})", "echo"},
      {R"({"prompt": "x", "logprobs": 5})", "logprobs"},
      {R"({"prompt": "x", "presence_penalty": 0.5})", "presence_penalty"},
      {R"({"prompt": "x", "logit_bias": {"1": 5}})", "logit_bias"},
      {R"({"prompt": "x", "model": 3})", "model"},
      {R"({"max_tokens": 3})", "prompt"},                         // no prompt
      {R"({"prompt": ["a", "b"]})", "prompt"},                    // two prompts
      {R"({"prompt": []})", "prompt"},
      {R"({"prompt": [1, -2]})", "prompt"},                       // a negative id
      {R"({"prompt": [1, 3000000000]})", "prompt"},               // beyond int32
      {R"({"prompt": [1, "a"]})", "prompt"},
      {R"({"prompt": {"text": "x"}})", "prompt"},
  };
  for (const auto& [body, field] : cases) {
    const ApiError e = completion_error(body);
    EXPECT_EQ(e.status(), 400) << body;
    EXPECT_EQ(e.param(), field) << body << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(field.substr(0, field.find('.'))), std::string::npos)
        << "the message names the field: " << e.what();
  }
}

TEST(ServeRequest, MalformedBodiesAreRefusedWithoutAField) {
  for (const std::string body : {"", "{", "[1, 2]", "\"text\"", "{\"prompt\": \"x\",}", "nul"}) {
    const ApiError e = completion_error(body);
    EXPECT_EQ(e.status(), 400) << body;
    EXPECT_TRUE(e.param().empty()) << body;
  }
  EXPECT_NE(std::string(completion_error("{").what()).find("not valid JSON"), std::string::npos);
  EXPECT_NE(std::string(completion_error("[1]").what()).find("JSON object"), std::string::npos);
}

TEST(ServeRequest, ChatTakesMessagesAndTextParts) {
  const ChatRequest r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}], "name": "ann"}],
      "max_completion_tokens": 7, "logprobs": false})");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "Hi there");
  EXPECT_EQ(r.generation.max_tokens, 7);
  EXPECT_FALSE(parse_chat_request(R"({"messages": [{"role": "user", "content": "x"}]})").generation.max_tokens);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"messages": []})", "messages"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})", "messages[0].tool_calls"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "max_completion_tokens": 3})", "max_completion_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": []})", "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "prompt": "x"})", "prompt"},
  };
  for (const auto& [body, field] : cases) {
    const ApiError e = chat_error(body);
    EXPECT_EQ(e.status(), 400) << body;
    EXPECT_EQ(e.param(), field) << body << ": " << e.what();
  }
}

TEST(ServeRequest, TheContextCheckSaysBothNumbers) {
  EXPECT_NO_THROW(check_fits_context(10, 11, 20, "prompt"));   // 20 - 10 + 1 = 11 fit
  EXPECT_NO_THROW(check_fits_context(20, std::nullopt, 20, "prompt"));
  try {
    check_fits_context(10, 12, 20, "prompt");
    ADD_FAILURE() << "max_tokens 12 accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "max_tokens");
    EXPECT_NE(std::string(e.what()).find("room for 11"), std::string::npos) << e.what();
  }
  try {
    check_fits_context(21, std::nullopt, 20, "messages");
    ADD_FAILURE() << "a prompt longer than the context accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "messages");
    EXPECT_NE(std::string(e.what()).find("21 tokens"), std::string::npos) << e.what();
  }
}

TEST(ServeRequest, TheErrorBodyIsOpenAis) {
  const json body = error_body(ApiError(400, "bad", "top_p"));
  EXPECT_EQ(body["error"]["message"], "bad");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "top_p");
  EXPECT_TRUE(body["error"]["code"].is_null());
  EXPECT_TRUE(error_body(ApiError(503, "busy", "", "server_error"))["error"]["param"].is_null());
}

TEST(ServeChatTemplate, PlainTurnsEndingWithTheAssistantsCue) {
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Name a colour."}};
  EXPECT_EQ(chat_prompt(messages),
            "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Name a colour.\nAssistant:");
  EXPECT_EQ(chat_template_stops(), std::vector<std::string>{"\nUser:"});
}

// Every way of cutting a text into pieces streams the same output as feeding it whole.
TEST(ServeStopStrings, StreamedPiecesConcatenateToTheWhole) {
  const std::vector<std::string> stops = {"\nUser:", "END", "EE"};
  const std::vector<std::string> texts = {"hello world", "line\nUse it\nUser: next", "abENDcd",
                                          "aE", "xEEND", "\nUse", "END"};
  for (const std::string& text : texts) {
    StopMatcher whole(stops);
    std::string expected = whole.feed(text);
    expected += whole.flush();
    for (size_t cut = 0; cut <= text.size(); ++cut)
      for (size_t cut2 = cut; cut2 <= text.size(); ++cut2) {
        StopMatcher m(stops);
        std::string out = m.feed(text.substr(0, cut));
        out += m.feed(text.substr(cut, cut2 - cut));
        out += m.feed(text.substr(cut2));
        out += m.flush();
        EXPECT_EQ(out, expected) << "'" << text << "' cut at " << cut << ", " << cut2;
      }
  }
  StopMatcher m(stops);
  EXPECT_EQ(m.feed("a\nUs"), "a");  // "\nUs" may start "\nUser:"
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.feed("er: b"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.feed("more"), "");
  EXPECT_EQ(m.flush(), "");
  StopMatcher none({});
  EXPECT_EQ(none.feed("abc"), "abc");
}

TEST(ServeResponse, BodiesAndChunksInOpenAisFormat) {
  const ResponseHeader h{"cmpl-1", 1700000000, "tiny"};
  const json c = completion_body(Endpoint::completions, h, "text", "length", Usage{3, 4});
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "text");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["usage"]["total_tokens"], 7);
  const json chat = completion_body(Endpoint::chat, h, "hi", "stop", Usage{1, 1});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "hi");
  const json first = completion_chunk(Endpoint::chat, h, "", std::nullopt, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json piece = completion_chunk(Endpoint::chat, h, "lo", std::nullopt);
  EXPECT_EQ(piece["choices"][0]["delta"]["content"], "lo");
  const json last = completion_chunk(Endpoint::chat, h, "", std::string("stop"));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  const json usage = usage_chunk(Endpoint::completions, h, Usage{2, 5});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 5);
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_STREQ(kSseDone, "data: [DONE]\n\n");
}

}  // namespace
}  // namespace sf::serve
