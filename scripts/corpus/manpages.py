"""Manual pages to plain text.

Preferred: groff, the formatter behind `man`, called directly (the same pipeline `man -l` runs,
three times faster since man-db's wrapper processes are skipped): preconv (-k, UTF-8 input), tbl
(-t), the mandoc macros, ASCII output (-Tascii: plain hyphens and quotes, no overstriking:
-P-cbou), 78-column lines like `man` in an 80-column terminal, hyphenation off (-rHY=0) and
left-adjusted lines (our corpusleft.tmac sets `.ad l`), so words are never split and lines carry
no justification spaces. Pages that only redirect (`.so other.3`) are skipped: their target is
in the set already.

Fallback when groff is missing: strip_roff(), a small converter that keeps the text of the
common man(7) macros and drops the rest. It is cruder (no tables, no filling) but deterministic.
"""
import concurrent.futures
import gzip
import os
import re
import shutil
import subprocess


def read_page_source(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read()


def is_redirect(source):
    for line in source.decode("utf-8", errors="replace").split("\n"):
        if line.startswith(('.\\"', "'\\\"")) or not line.strip():
            continue
        return line.startswith(".so ")
    return False


def groff_available():
    return shutil.which("groff") is not None


def groff_version():
    """groff's version (e.g. "1.22.4"), recorded in the manifest: it shapes the rendering."""
    result = subprocess.run(["groff", "--version"], stdout=subprocess.PIPE, check=True)
    first_line = result.stdout.decode("utf-8", errors="replace").split("\n")[0]
    return first_line.split()[-1]


def _render_with_groff(source, path, tmac_dir):
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    command = ["groff", "-k", "-Kutf8", "-t", "-mandoc", "-Tascii", "-P-cbou", "-rLL=78n",
               "-rHY=0", f"-M{tmac_dir}", "-mcorpusleft"]
    result = subprocess.run(command, input=source, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=environment, check=False)
    if result.returncode != 0 and not result.stdout:
        raise RuntimeError(f"groff failed on {path} with exit status {result.returncode}")
    return result.stdout.decode("utf-8", errors="replace")


# ---- fallback converter ----

_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),   # font changes
    (re.compile(r"\\s[+-]?\d"), ""),                # size changes
    (re.compile(r"\\\((em|en)"), "--"),
    (re.compile(r"\\\((aq|cq|oq)"), "'"),
    (re.compile(r"\\\((dq|lq|rq)"), '"'),
    (re.compile(r"\\\(bu"), "*"),
    (re.compile(r"\\\((co)"), "(C)"),
    (re.compile(r"\\\*\((lq|rq)"), '"'),
    (re.compile(r"\\\*\[[^\]]*\]|\\\*\(..|\\\*."), ""),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[&|^%:)/,]"), ""),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\~"), " "),
]
_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}
_PARAGRAPH = {"PP", "LP", "P", "TP", "IP", "HP", "sp", "br", "RS", "RE", "TQ", "EX", "EE", "in"}


def _unescape_roff(text):
    for pattern, replacement in _ESCAPES:
        text = pattern.sub(replacement, text)
    return text


def _macro_arguments(rest):
    return [argument.strip('"') for argument in re.findall(r'"[^"]*"|\S+', rest)]


def strip_roff(source):
    out = []
    for line in source.split("\n"):
        if line.startswith(('.\\"', "'\\\"", '.\\\\"')):
            continue
        if line.startswith((".", "'")):
            match = re.match(r"[.'](\S*)\s*(.*)", line)
            macro, rest = match.group(1), match.group(2)
            arguments = _macro_arguments(rest)
            if macro == "TH" and arguments:
                out.append(" ".join(arguments[:2]))
                out.append("")
            elif macro in ("SH", "SS"):
                out += ["", " ".join(arguments), ""]
            elif macro in ("B", "I", "SM", "SB"):
                out.append(" ".join(arguments))
            elif macro in _ALTERNATING:
                out.append("".join(arguments))
            elif macro in _PARAGRAPH:
                out.append("")
                if macro == "IP" and arguments:
                    out.append(arguments[0])
            continue  # any other request or macro carries no text
        out.append(line)
    return _unescape_roff("\n".join(out))


def render_pages(paths, tmac_dir, use_groff):
    """Returns the rendered text of each page (None for .so redirects), in the order given."""
    sources = [read_page_source(path) for path in paths]

    def render(index):
        if is_redirect(sources[index]):
            return None
        if use_groff:
            return _render_with_groff(sources[index], paths[index], tmac_dir)
        return strip_roff(sources[index].decode("utf-8", errors="replace"))

    workers = max(1, min(8, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(render, range(len(paths))))
