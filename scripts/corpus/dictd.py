"""Reader for dictd dictionaries (NAME.index + NAME.dict.dz), as shipped by Debian's dict-* packages.

NAME.dict.dz is dictzip, i.e. a valid gzip file: gunzipped whole it is the dictionary text.
NAME.index has one line per headword: `headword TAB offset TAB length`, with offset and length
written in dictd's base-64 digits (A-Z a-z 0-9 + /, most significant first) into the text.
Several headwords may point at one entry; each entry is returned once.

Headwords starting with "00" are the database's own metadata (00-database-info, 00databaseurl,
00-gcide-long, ...) and are skipped: they describe the file, they are not dictionary text.
"""
import gzip

_BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DIGIT_VALUE = {digit: value for value, digit in enumerate(_BASE64_DIGITS)}


def decode_number(digits, where):
    value = 0
    for digit in digits:
        if digit not in _DIGIT_VALUE:
            raise ValueError(f"{where}: '{digits}' is not a dictd base-64 number")
        value = value * 64 + _DIGIT_VALUE[digit]
    return value


def read_entries(index_path, dict_path):
    """Returns the dictionary's entries as strings, in the order they lie in the .dict file."""
    with gzip.open(dict_path, "rb") as handle:
        data = handle.read()
    spans = set()
    with open(index_path, "rb") as handle:
        for line_number, raw_line in enumerate(handle, 1):
            where = f"{index_path}:{line_number}"
            fields = raw_line.rstrip(b"\n").split(b"\t")
            if len(fields) < 3:
                raise ValueError(f"{where}: expected 'headword<TAB>offset<TAB>length'")
            if fields[0].startswith(b"00"):
                continue
            offset = decode_number(fields[1].decode("ascii"), where)
            length = decode_number(fields[2].decode("ascii"), where)
            if offset + length > len(data):
                raise ValueError(f"{where}: entry lies past the end of {dict_path}")
            spans.add((offset, length))
    return [data[offset:offset + length].decode("utf-8", errors="replace")
            for offset, length in sorted(spans)]
