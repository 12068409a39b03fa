// web_page.h — the page `stagformer serve` answers GET / with: a prompt box, the sampling
// settings, Send and Stop, and the reply streamed from POST /v1/completions with its tokens/s.
// One self-contained HTML document (inline CSS and JavaScript, nothing fetched from elsewhere),
// compiled into the binary so the server needs no files beside it.
#pragma once

#include <string_view>

namespace sf::serve {

// The whole page, UTF-8 HTML.
std::string_view web_page_html();

}  // namespace sf::serve
