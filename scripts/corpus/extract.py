#!/usr/bin/env python3
"""Command-line front end of the corpus extractors (called by scripts/corpus.sh).

Each subcommand reads one source's unpacked package files and writes its documents as
OUT/000000.txt, OUT/000001.txt, ... (see corpuslib.DocumentWriter), in a fixed order:
  files     one document per file found under --root (sorted paths; optional per-file format)
  kjv       `bible -f` listing -> one document per book
  austen    janeaustenr's R data -> one document per novel (publication order)
  dictd     dictd dictionary -> one document per --group consecutive entries
  split     one long text -> one document per chapter (style picks the heading rule)
  html      HTML pages found under --root -> one document per page
  man       manual pages found under --root -> one document per page
  sword     compressed SWORD module -> one document per block (book, or chapter)
  manifest  MANIFEST.tsv from DIR/meta/*.tsv and DIR/text/*/
Standard library only. File patterns are fnmatch patterns on paths relative to --root, where
'*' also matches '/'.
"""
import argparse
import fnmatch
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpuslib  # noqa: E402
import dictd  # noqa: E402
import formats  # noqa: E402
import html2text  # noqa: E402
import manpages  # noqa: E402
import rdata  # noqa: E402
import sword  # noqa: E402


def find_files(roots, include, exclude):
    """Regular files (not symlinks) under each root whose relative path matches an include
    pattern and no exclude pattern: the roots in the order given, each one's files sorted by
    relative path (code-point order = C locale byte order)."""
    return [path for root in roots for path in _find_files_under(root, include, exclude)]


def _find_files_under(root, include, exclude):
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            relative = os.path.relpath(path, root)
            if any(fnmatch.fnmatchcase(relative, pattern) for pattern in include) and \
                    not any(fnmatch.fnmatchcase(relative, pattern) for pattern in exclude):
                found.append(relative)
    if not found:
        raise SystemExit(f"corpus: no files under {root} match {include}")
    return [os.path.join(root, relative) for relative in sorted(found)]


def command_files(args):
    writer = corpuslib.DocumentWriter(args.out)
    for path in find_files(args.root, args.include, args.exclude or []):
        text = corpuslib.read_text_file(path)
        if args.format == "brown":
            text = formats.brown_to_text(text)
        elif args.format == "fortune":
            text = formats.fortunes_to_text(text)
        writer.add(text)
    writer.finish(args.name)


def command_kjv(args):
    writer = corpuslib.DocumentWriter(args.out)
    for _name, text in formats.kjv_books(corpuslib.read_text_file(args.listing), args.listing):
        writer.add(text)
    writer.finish(args.name)


AUSTEN_NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma",
                 "northangerabbey", "persuasion"]


def command_austen(args):
    variables = rdata.read_lazyload_db(args.rdx)
    missing = [name for name in AUSTEN_NOVELS if name not in variables]
    if missing:
        raise SystemExit(f"corpus: {args.rdx} lacks the novels {missing}")
    writer = corpuslib.DocumentWriter(args.out)
    for name in AUSTEN_NOVELS:
        lines = variables[name]
        if not all(line is None or isinstance(line, str) for line in lines):
            raise SystemExit(f"corpus: {args.rdx}: {name} is not a character vector")
        writer.add("\n".join(line or "" for line in lines))
    writer.finish(args.name)


def command_dictd(args):
    entries = dictd.read_entries(args.index, args.dict)
    writer = corpuslib.DocumentWriter(args.out)
    for start in range(0, len(entries), args.group):
        group = entries[start:start + args.group]
        writer.add("\n\n".join(entry.strip("\n") for entry in group))
    writer.finish(args.name)


SPLIT_STYLES = {
    # The Jargon File (jargon-text): front-matter chapters, the glossary one letter at a time,
    # the appendices and the bibliography.
    # (Headings use no-break spaces: \s matches them.)
    "jargon": (formats.line_matches(r"Chapter\s\d+\.\s.*|Glossary|  [A-Z0-9]|Appendix\s[A-Z]\.\s.*|"
                                    r"Bibliography"), None),
    # Texinfo plain text (gnu-standards): chapters are underlined with '*'; the index is dropped.
    "texinfo": (formats.underlined_with("*"), r"Index|Appendix [A-Z] GNU Free Documentation License"),
    # debian-reference's text rendering: Preface, Chapter N., Appendix A.
    "debian-reference": (formats.line_matches(r"(Chapter\s\d+|Appendix\s[A-Z])\.\s.*|Preface"), None),
}


def command_split(args):
    is_heading, drop = SPLIT_STYLES[args.style]
    writer = corpuslib.DocumentWriter(args.out)
    for path in args.input:
        for part in formats.split_at_headings(corpuslib.read_text_file(path), is_heading, drop):
            writer.add(part)
    writer.finish(args.name)


def command_html(args):
    writer = corpuslib.DocumentWriter(args.out)
    for path in find_files(args.root, args.include, args.exclude or []):
        writer.add(html2text.html_to_text(corpuslib.read_text_file(path), args.profile))
    writer.finish(args.name)


def command_man(args):
    paths = find_files(args.root, args.include, args.exclude or [])
    use_groff = manpages.groff_available() and not args.no_groff
    if not use_groff:
        print("corpus: WARNING: groff not available, using the simple roff stripper",
              file=sys.stderr)
    if args.renderer_file:  # tell corpus.sh which renderer made the text, for the manifest
        with open(args.renderer_file, "w", encoding="utf-8") as handle:
            handle.write(f"groff-{manpages.groff_version()}\n" if use_groff else "roff-strip\n")
    writer = corpuslib.DocumentWriter(args.out)
    for text in manpages.render_pages(paths, args.tmac_dir, use_groff):
        if text is not None:
            writer.add(text)
    writer.finish(args.name)


def command_sword(args):
    writer = corpuslib.DocumentWriter(args.out)
    for text in sword.read_module_documents(args.conf, args.root):
        writer.add(text)
    writer.finish(args.name)


def command_manifest(args):
    """MANIFEST.tsv: one row per source with its packages and versions (from meta/SOURCE.tsv,
    lines 'package TAB version'), document count, bytes and the sha256 of its documents
    concatenated in order; then a TOTAL row hashing all sources' hashes in order."""
    text_root = os.path.join(args.dir, "text")
    meta_root = os.path.join(args.dir, "meta")
    rows = []
    for source in sorted(os.listdir(text_root)):
        source_dir = os.path.join(text_root, source)
        names = sorted(name for name in os.listdir(source_dir) if name.endswith(".txt"))
        digest = hashlib.sha256()
        size = 0
        for name in names:
            with open(os.path.join(source_dir, name), "rb") as handle:
                data = handle.read()
            digest.update(data)
            size += len(data)
        packages, versions = [], []
        with open(os.path.join(meta_root, source + ".tsv"), encoding="utf-8") as handle:
            for line in handle:
                package, version = line.rstrip("\n").split("\t")
                packages.append(package)
                versions.append(version)
        rows.append([source, ",".join(packages), ",".join(versions), str(len(names)), str(size),
                     digest.hexdigest()])
    total = hashlib.sha256("".join(row[5] for row in rows).encode("ascii")).hexdigest()
    rows.append(["TOTAL", "-", "-", str(sum(int(row[3]) for row in rows)),
                 str(sum(int(row[4]) for row in rows)), total])
    with open(os.path.join(args.dir, "MANIFEST.tsv"), "w", encoding="utf-8") as handle:
        handle.write("source\tpackages\tversions\tdocuments\tbytes\tsha256\n")
        for row in rows:
            handle.write("\t".join(row) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name, function, needs_out=True):
        sub = commands.add_parser(name)
        sub.set_defaults(function=function)
        if needs_out:
            sub.add_argument("--out", required=True, help="folder for NNNNNN.txt documents")
            sub.add_argument("--name", required=True, help="source name, for messages")
        return sub

    def add_file_selection(sub):
        sub.add_argument("--root", action="append", required=True, help="repeatable")
        sub.add_argument("--include", action="append", required=True)
        sub.add_argument("--exclude", action="append")

    sub = add("files", command_files)
    add_file_selection(sub)
    sub.add_argument("--format", choices=["plain", "brown", "fortune"], default="plain")
    sub = add("kjv", command_kjv)
    sub.add_argument("--listing", required=True)
    sub = add("austen", command_austen)
    sub.add_argument("--rdx", required=True)
    sub = add("dictd", command_dictd)
    sub.add_argument("--index", required=True)
    sub.add_argument("--dict", required=True)
    sub.add_argument("--group", type=int, default=100)
    sub = add("split", command_split)
    sub.add_argument("--style", choices=sorted(SPLIT_STYLES), required=True)
    sub.add_argument("--input", action="append", required=True)
    sub = add("html", command_html)
    add_file_selection(sub)
    sub.add_argument("--profile", choices=sorted(html2text.PROFILES), required=True)
    sub = add("man", command_man)
    add_file_selection(sub)
    sub.add_argument("--tmac-dir", required=True)
    sub.add_argument("--no-groff", action="store_true", help="use the roff stripper even if groff exists")
    sub.add_argument("--renderer-file", help="write the renderer's name and version here")
    sub = add("sword", command_sword)
    sub.add_argument("--conf", required=True)
    sub.add_argument("--root", required=True, help="the folder the conf's DataPath is relative to")
    sub = add("manifest", command_manifest, needs_out=False)
    sub.add_argument("--dir", required=True)

    args = parser.parse_args()
    args.function(args)


if __name__ == "__main__":
    main()
