"""HTML to plain text with Python's html.parser, for documentation pages (Sphinx, DocBook).

Block elements become line breaks (paragraph-level ones a blank line), list items get "* ",
table cells are separated by " | ", <pre> keeps its whitespace, and everything else has its
whitespace collapsed as a browser would. Navigation, scripts, styles and header links are left
out: an element is skipped with all its content when its tag is in SKIPPED_TAGS, one of its
classes is in the profile's skip_classes or its id in skip_ids. With `main_class` set, only text inside the first
element carrying that class is kept (Sphinx's <div class="body" role="main">).
"""
from html.parser import HTMLParser
import re

SKIPPED_TAGS = {"script", "style", "head", "title", "nav", "noscript", "template", "svg", "button"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "param", "source", "track", "wbr"}
PARAGRAPH_TAGS = {"p", "div", "section", "article", "blockquote", "pre", "table", "ul", "ol", "dl",
                  "h1", "h2", "h3", "h4", "h5", "h6", "figure", "aside", "header", "footer",
                  "details", "summary", "dd", "hr", "caption"}
LINE_TAGS = {"br", "li", "tr", "dt", "td", "th"}

PROFILES = {
    # Sphinx (python3.11-doc): only the main body; drop pilcrow links and the "source" note.
    "sphinx": {"main_class": "body", "skip_ids": set(),
               "skip_classes": {"headerlink", "related", "sphinxsidebar", "footer"}},
    # DocBook/Publican (debian-handbook, debian-reference): drop navigation bars and banners.
    "docbook": {"main_class": None, "skip_ids": {"banner", "title"},
                "skip_classes": {"navheader", "navfooter", "docnav", "toc", "breadcrumbs"}},
}

_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")


class _TextExtractor(HTMLParser):
    def __init__(self, profile):
        super().__init__(convert_charrefs=True)
        self.skip_classes = profile["skip_classes"]
        self.skip_ids = profile["skip_ids"]
        self.main_class = profile["main_class"]
        self.stack = []          # open elements: (tag, skipped, is_main)
        self.skip_depth = 0      # number of open skipped elements
        self.main_depth = 0 if self.main_class else 1  # >0 while inside the main element
        self.main_seen = False
        self.pre_depth = 0
        self.bullet_pending = False  # "* " goes before the list item's first text
        self.parts = []

    def _emit_break(self, newlines):
        self.parts.append("\n" * newlines)

    def _capturing(self):
        return self.skip_depth == 0 and self.main_depth > 0

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            if tag in ("br", "hr") and self._capturing():
                self._emit_break(1 if tag == "br" else 2)
            return
        attributes = dict(attrs)
        names = set((attributes.get("class") or "").split())
        skipped = (tag in SKIPPED_TAGS or bool(names & self.skip_classes)
                   or attributes.get("id") in self.skip_ids)
        is_main = bool(self.main_class and not self.main_seen and self.main_class in names)
        if is_main:
            self.main_seen = True
            self.main_depth += 1
        self.stack.append((tag, skipped, is_main))
        if skipped:
            self.skip_depth += 1
        if tag == "pre":
            self.pre_depth += 1
        if self._capturing():
            if tag in PARAGRAPH_TAGS:
                self._emit_break(2)
            elif tag in LINE_TAGS:
                self._emit_break(1)
            if tag == "li":
                self.bullet_pending = True
            elif tag in ("td", "th"):
                self.parts.append(" | ")

    def handle_startendtag(self, tag, attrs):
        if tag in ("br", "hr") and self._capturing():
            self._emit_break(1 if tag == "br" else 2)

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            return
        # Close up to the matching open element (tolerates unclosed <p>, <li>, ...).
        if not any(open_tag == tag for open_tag, _, _ in self.stack):
            return
        while self.stack:
            open_tag, skipped, is_main = self.stack.pop()
            if self._capturing() and open_tag in PARAGRAPH_TAGS:
                self._emit_break(2)
            if skipped:
                self.skip_depth -= 1
            if is_main:
                self.main_depth -= 1
            if open_tag == "pre":
                self.pre_depth -= 1
            if open_tag == tag:
                break

    def handle_data(self, data):
        if not self._capturing():
            return
        if self.bullet_pending and data.strip():
            self.parts.append("* ")
            self.bullet_pending = False
            data = data.lstrip()
        if self.pre_depth:
            # Protect preformatted spaces and tabs from the final whitespace clean-up.
            self.parts.append(data.replace(" ", _PRE_SPACE).replace("\t", _PRE_TAB))
        else:
            self.parts.append(_WHITESPACE.sub(" ", data))


# Private-use stand-ins for spaces and tabs inside <pre>, restored after clean-up.
_PRE_SPACE = "\ue000"
_PRE_TAB = "\ue001"
_SPACE_RUNS = re.compile(r" {2,}")


def html_to_text(markup, profile_name):
    extractor = _TextExtractor(PROFILES[profile_name])
    extractor.feed(markup)
    extractor.close()
    text = _SPACE_RUNS.sub(" ", "".join(extractor.parts))
    lines = []
    for line in text.split("\n"):
        line = line.strip(" ")
        if line.startswith("| "):  # the separator emitted before a row's first cell
            line = line[2:]
        lines.append(line.replace(_PRE_SPACE, " ").replace(_PRE_TAB, "\t"))
    return "\n".join(lines)
