"""Shared pieces of the corpus extractors: text normalisation and the numbered document writer.

Every extractor turns its source into a sequence of documents and hands each to DocumentWriter,
which normalises the text (same rules for every source, so sources look alike to the tokenizer)
and writes it as OUT/000000.txt, OUT/000001.txt, ... in the order given. Callers are responsible
for a fixed order (sorted file lists, file offsets); nothing here reads clocks or the environment,
so the same inputs always give byte-identical files.
"""
import gzip
import os
import re

# C0 controls other than TAB and LF, DEL, and C1 controls: never meaningful in these texts
# (they appear as stray bytes in a few sources); removed so the tokenizer never sees them.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\x80-\x9f]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text):
    """Canonical form of a document: LF line ends, no control characters, no trailing spaces,
    at most one blank line in a row, no blank lines at either end, one final newline.
    Returns "" for a document with no visible text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = text.replace("\ufeff", "")  # byte-order marks inside concatenated files
    text = _CONTROL_CHARACTERS.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    text = text.strip("\n")
    if not text.strip():
        return ""
    return text + "\n"


def decode_bytes(data):
    """UTF-8 with invalid bytes replaced (a few legacy files carry Latin-1 bytes)."""
    return data.decode("utf-8", errors="replace")


def read_text_file(path):
    """Reads a text file, gunzipping it first when its name ends in .gz."""
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return decode_bytes(handle.read())
    with open(path, "rb") as handle:
        return decode_bytes(handle.read())


def read_list_file(path):
    """Reads a file holding one path per line (blank lines ignored), in the order written."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


class DocumentWriter:
    """Writes normalised documents as OUT/NNNNNN.txt, numbered from 0 in the order added.

    Empty documents (nothing visible after normalisation) are dropped, so numbering stays dense.
    OUT must not exist or be empty: a stale file from an earlier, longer run would otherwise
    survive and change the corpus.
    """

    def __init__(self, out_dir):
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        leftovers = os.listdir(out_dir)
        if leftovers:
            raise SystemExit(f"corpus: output folder {out_dir} is not empty ({len(leftovers)} entries)")
        self.documents = 0
        self.bytes = 0

    def add(self, text):
        text = normalize_text(text)
        if not text:
            return False
        data = text.encode("utf-8")
        path = os.path.join(self.out_dir, f"{self.documents:06d}.txt")
        with open(path, "wb") as handle:
            handle.write(data)
        self.documents += 1
        self.bytes += len(data)
        return True

    def finish(self, source_name):
        if self.documents == 0:
            raise SystemExit(f"corpus: {source_name} produced no documents in {self.out_dir}")
        print(f"corpus: {source_name}: {self.documents} documents, {self.bytes} bytes")
