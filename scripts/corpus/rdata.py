"""Reader for R's lazy-load databases (.rdx index + .rdb blobs) holding plain data.

R packages store their data sets as a lazy-load database: the .rdx file is a gzip-compressed
R serialization of a list(variables=, references=, compressed=) whose `variables` element maps
each object name to (offset, length) in the .rdb file; each .rdb blob is a 4-byte big-endian
uncompressed size followed by a zlib stream (compression type 1; types 2/3 = bzip2/xz carry an
extra type byte) holding the object's own R serialization (XDR format, versions 2 and 3).

This module decodes the subset of the serialization format that data sets use: vectors
(logical, integer, double, complex, character, list), pairlists with tags and attributes,
symbols and the reference table. Anything else (closures, environments, bytecode) raises
ValueError naming the type, so a changed package fails loudly rather than silently.

Decoded values: character vectors -> list[str | None]; other atomic vectors -> list; lists ->
RList (a list with .attributes); pairlists -> list of (tag, value); NULL -> None.
"""
import bz2
import gzip
import lzma
import struct
import zlib

NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
VECSXP, EXPRSXP, RAWSXP = 19, 20, 24
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP = 255, 254, 253, 242, 241
ALTREP_SXP, ATTRLISTSXP = 238, 239

# R's integer NA is INT_MIN.
NA_INTEGER = -(2 ** 31)


class RList(list):
    """An R generic vector (list); .attributes holds its decoded attribute pairlist."""

    def __init__(self, items, attributes=None):
        super().__init__(items)
        self.attributes = attributes or []


class RVector(list):
    """An R atomic vector with attributes (e.g. names, class)."""

    def __init__(self, items, attributes=None):
        super().__init__(items)
        self.attributes = attributes or []


class _Unserializer:
    def __init__(self, data, source):
        self.data = data
        self.pos = 0
        self.refs = []
        self.source = source

    def fail(self, message):
        raise ValueError(f"{self.source}: {message} (at byte {self.pos})")

    def read_int(self):
        if self.pos + 4 > len(self.data):
            self.fail("truncated serialization")
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def read_length(self):
        length = self.read_int()
        if length == -1:  # long vector: two more ints, upper and lower halves
            upper, lower = self.read_int(), self.read_int()
            length = (upper << 32) + (lower & 0xFFFFFFFF)
        return length

    def read_bytes(self, count):
        if self.pos + count > len(self.data):
            self.fail("truncated serialization")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def read_header(self):
        if self.read_bytes(2) != b"X\n":
            self.fail("not an XDR R serialization (expected 'X\\n')")
        version = self.read_int()
        self.read_int()  # writer's R version
        self.read_int()  # minimal reader version
        if version == 3:
            encoding_length = self.read_int()
            self.read_bytes(encoding_length)
        elif version != 2:
            self.fail(f"unsupported serialization version {version}")

    def read_attributes_if(self, has_attributes):
        return self.read_item() if has_attributes else []

    def read_charsxp(self, flags):
        length = self.read_int()
        if length == -1:
            return None  # NA_character_
        raw = self.read_bytes(length)
        levels = flags >> 12
        if levels & (1 << 2):  # LATIN1 mark
            return raw.decode("latin-1")
        return raw.decode("utf-8", errors="replace")

    def read_item(self):
        flags = self.read_int()
        sexp_type = flags & 0xFF
        has_attributes = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if sexp_type in (NILVALUE_SXP, NILSXP):
            return None
        if sexp_type in (GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP):
            return f"<environment {sexp_type}>"
        if sexp_type == REFSXP:
            index = flags >> 8
            if index == 0:
                index = self.read_int()
            return self.refs[index - 1]
        if sexp_type == SYMSXP:
            name = self.read_item()  # a CHARSXP
            self.refs.append(("symbol", name))
            return ("symbol", name)
        if sexp_type in (LISTSXP, LANGSXP, ATTRLISTSXP):
            # Pairlist: read iteratively along CDRs so long lists do not recurse deeply.
            cells = []
            while True:
                self.read_attributes_if(has_attributes)  # a cell's attributes: not needed
                tag = self.read_item() if has_tag else None
                value = self.read_item()
                cells.append((tag[1] if isinstance(tag, tuple) else tag, value))
                flags = self.read_int()
                sexp_type = flags & 0xFF
                has_attributes = bool(flags & (1 << 9))
                has_tag = bool(flags & (1 << 10))
                if sexp_type in (NILVALUE_SXP, NILSXP):
                    return cells
                if sexp_type not in (LISTSXP, LANGSXP, ATTRLISTSXP):
                    self.fail(f"pairlist ends with type {sexp_type}, expected NULL")
        if sexp_type == CHARSXP:
            return self.read_charsxp(flags)
        if sexp_type in (LGLSXP, INTSXP):
            length = self.read_length()
            values = list(struct.unpack_from(f">{length}i", self.read_bytes(4 * length)))
            values = [None if v == NA_INTEGER else v for v in values]
            return self.wrap(RVector, values, has_attributes)
        if sexp_type == REALSXP:
            length = self.read_length()
            values = list(struct.unpack_from(f">{length}d", self.read_bytes(8 * length)))
            return self.wrap(RVector, values, has_attributes)
        if sexp_type == CPLXSXP:
            length = self.read_length()
            pairs = struct.unpack_from(f">{2 * length}d", self.read_bytes(16 * length))
            values = [complex(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
            return self.wrap(RVector, values, has_attributes)
        if sexp_type == RAWSXP:
            length = self.read_length()
            return self.wrap(RVector, list(self.read_bytes(length)), has_attributes)
        if sexp_type == STRSXP:
            length = self.read_length()
            values = []
            for _ in range(length):
                char_flags = self.read_int()
                if char_flags & 0xFF != CHARSXP:
                    self.fail(f"character vector element has type {char_flags & 0xFF}")
                values.append(self.read_charsxp(char_flags))
            return self.wrap(RVector, values, has_attributes)
        if sexp_type in (VECSXP, EXPRSXP):
            length = self.read_length()
            values = [self.read_item() for _ in range(length)]
            return self.wrap(RList, values, has_attributes)
        self.fail(f"unsupported R object type {sexp_type} (only data vectors are decoded)")

    def wrap(self, cls, values, has_attributes):
        return cls(values, self.read_attributes_if(has_attributes))


def unserialize(data, source="<R data>"):
    """Decodes one XDR R serialization (the bytes saveRDS/serialize write, uncompressed)."""
    reader = _Unserializer(data, source)
    reader.read_header()
    return reader.read_item()


def _decompress_blob(blob, source):
    (size,) = struct.unpack_from(">I", blob, 0)
    body = blob[4:]
    if body[:1] == b"Z":  # type byte: bzip2
        data = bz2.decompress(body[1:])
    elif body[:1] == b"X":  # xz
        data = lzma.decompress(body[1:])
    elif body[:1] == b"0":  # stored uncompressed
        data = body[1:]
    else:
        data = zlib.decompress(body)
    if len(data) != size:
        raise ValueError(f"{source}: blob decompressed to {len(data)} bytes, header says {size}")
    return data


def attribute(value, name):
    """Returns attribute `name` of a decoded vector, or None."""
    for tag, attribute_value in getattr(value, "attributes", None) or []:
        if tag == name:
            return attribute_value
    return None


def read_lazyload_db(rdx_path):
    """Reads every variable of a lazy-load database; returns {name: decoded value}, sorted by name.

    rdx_path is the .rdx file; the .rdb beside it holds the blobs.
    """
    rdb_path = rdx_path[:-4] + ".rdb"
    with gzip.open(rdx_path, "rb") as index_file:
        index = unserialize(index_file.read(), rdx_path)
    names = attribute(index, "names")
    if names is None or "variables" not in names:
        raise ValueError(f"{rdx_path}: index has no 'variables' element")
    variables = index[names.index("variables")]
    variable_names = attribute(variables, "names")
    with open(rdb_path, "rb") as rdb_file:
        rdb = rdb_file.read()
    result = {}
    for name, (offset, length) in sorted(zip(variable_names, variables)):
        offset, length = int(offset), int(length)
        blob = rdb[offset:offset + length]
        if len(blob) != length:
            raise ValueError(f"{rdb_path}: variable {name} lies past the end of the file")
        result[name] = unserialize(_decompress_blob(blob, rdb_path), f"{rdb_path}:{name}")
    return result
