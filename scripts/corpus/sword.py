"""Reader for compressed SWORD Bible and commentary modules (drivers zText, zText4, zCom, zCom4).

A module's folder holds, per testament (ot, nt), three files whose names start with the block
type letter (b = one block per book, c = per chapter, v = per verse):
  ?zs  block index: 12-byte records (uint32 offset, uint32 compressed size, uint32 size) into ?zz
  ?zz  the compressed blocks (CompressType=ZIP: zlib streams)
  ?zv  entry index: one record per versification slot (module heading, testament heading, book
       and chapter headings, verses): uint32 block, uint32 offset in the uncompressed block, and
       the entry size as uint16 (zText, zCom) or uint32 (zText4, zCom4).
Entries are OSIS markup. We read every entry in slot order, drop repeats (commentaries point
several verses at one entry) and group entries by block: one block is one document (a book, or a
chapter for chapter-blocked modules), so no versification table is needed.
"""
import html
import os
import re
import struct
import zlib

_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.DOTALL)
_SELF_CLOSING_NOTE = re.compile(r"<note\b[^>]*/>")
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title>", re.DOTALL)
_PARAGRAPH_BREAK = re.compile(r"<(?:div\b[^>]*type=\"x-p\"[^>]*|/?p\b[^>]*|/?lg\b[^>]*)/?>")
_LINE_BREAK = re.compile(r"<(?:lb\b[^>]*/?|/l|br\b[^>]*/?)>")
_ANY_TAG = re.compile(r"<[^>]*>")
_CUT_TAG = re.compile(r"<[^>]*$")  # a few entries end inside a tag (truncated by the module)
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r" +([,.;:!?)\]”’])")


def parse_conf(conf_path):
    """Returns the [module] section's key=value pairs of a SWORD .conf file (first value wins)."""
    settings = {}
    with open(conf_path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                settings.setdefault("__name__", line[1:-1])
            elif "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                settings.setdefault(key.strip(), value.strip())
    return settings


def osis_to_text(markup):
    """Plain text of one OSIS entry: notes dropped, titles and paragraphs on their own lines."""
    markup = _NOTE.sub(" ", markup)
    markup = _SELF_CLOSING_NOTE.sub(" ", markup)
    markup = _TITLE.sub(lambda match: "\n\n" + match.group(1) + "\n\n", markup)
    markup = _PARAGRAPH_BREAK.sub("\n\n", markup)
    markup = _LINE_BREAK.sub("\n", markup)
    text = html.unescape(_CUT_TAG.sub("", _ANY_TAG.sub("", markup)))
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    return "\n".join(line.strip() for line in text.split("\n"))


def _read_records(data, record_format, where):
    size = struct.calcsize(record_format)
    if len(data) % size:
        raise ValueError(f"{where}: size {len(data)} is not a multiple of {size}")
    return [struct.unpack_from(record_format, data, position) for position in range(0, len(data), size)]


def _entry_records(index_data, blocks, wide_first, where):
    """Decodes the entry index, trying the size width the driver names first. Some modules
    declare zCom4 but carry 16-bit sizes; the width whose records all land inside their blocks
    is the right one."""
    formats = ["<III", "<IIH"] if wide_first else ["<IIH", "<III"]
    for record_format in formats:
        size = struct.calcsize(record_format)
        if len(index_data) % size:
            continue
        records = _read_records(index_data, record_format, where)
        if all(entry_size == 0 or (block < len(blocks) and offset + entry_size <= blocks[block][2])
               for block, offset, entry_size in records):
            return records
    raise ValueError(f"{where}: entry index matches neither 10- nor 12-byte records")


def read_module_documents(conf_path, sword_root):
    """Yields one plain-text document per compressed block of the module described by conf_path;
    sword_root is the folder that the conf's DataPath is relative to (…/usr/share/sword)."""
    settings = parse_conf(conf_path)
    driver = settings.get("ModDrv", "")
    if driver.lower() not in ("ztext", "ztext4", "zcom", "zcom4"):
        raise ValueError(f"{conf_path}: driver {driver!r} is not a compressed text/commentary")
    compression = settings.get("CompressType", "ZIP").upper()
    if compression != "ZIP":
        raise ValueError(f"{conf_path}: CompressType {compression} not supported (only ZIP)")
    data_path = os.path.normpath(os.path.join(sword_root, settings["DataPath"]))
    wide_sizes = driver.endswith("4")
    for testament in ("ot", "nt"):
        names = {kind: None for kind in ("zs", "zz", "zv")}
        for letter in "bcv":
            if os.path.exists(os.path.join(data_path, f"{testament}.{letter}zs")):
                names = {kind: os.path.join(data_path, f"{testament}.{letter}{kind}") for kind in names}
                break
        if names["zs"] is None:
            continue
        with open(names["zs"], "rb") as handle:
            blocks = _read_records(handle.read(), "<III", names["zs"])
        if not blocks:
            continue
        with open(names["zz"], "rb") as handle:
            compressed = handle.read()
        with open(names["zv"], "rb") as handle:
            entries = _entry_records(handle.read(), blocks, wide_sizes, names["zv"])
        block_texts = {}
        seen = set()
        for block, offset, entry_size in entries:
            if entry_size == 0 or (block, offset, entry_size) in seen:
                continue
            seen.add((block, offset, entry_size))
            block_texts.setdefault(block, []).append((offset, entry_size))
        for block in sorted(block_texts):
            block_offset, block_size, plain_size = blocks[block]
            plain = zlib.decompress(compressed[block_offset:block_offset + block_size])
            if len(plain) != plain_size:
                raise ValueError(f"{names['zz']}: block {block} is {len(plain)} bytes, index says {plain_size}")
            pieces = [osis_to_text(plain[offset:offset + size].decode("utf-8", errors="replace"))
                      for offset, size in block_texts[block]]
            yield "\n".join(piece for piece in pieces if piece.strip())
