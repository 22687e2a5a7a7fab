#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The man pages against the code, so that neither can drift:
#  - every public function (declared in sealstore.h or exported by
#    libsealstore.sym) has a section 3 page, its own or a link made from a
#    page's NAME line (man/man-links.sh), and is named on that NAME line;
#    its prototype in the header appears, as rendered, on that page;
#  - every SS_* constant of sealstore.h is on some section 3 page, every
#    SS_E_* code on sealstore.3, every member of a public struct on the
#    pages that mention the struct;
#  - every SEALSTORE_* option of src/lib/options.h is in sealstored.8, and
#    every flag and variable that `sealstored --help` shows; every flag of
#    `sealstore --help` (and its commands' help) is in sealstore.1, every
#    flag and scenario of `sealstore-bench --help` in sealstore-bench.1;
#  - every page is installed and distributed (listed in Makefile.am);
#  - each page renders with man(1) without a warning, lexgrog(1) reads its
#    NAME, mandoc -T lint (when installed) has nothing to say; the links
#    installed into a scratch man directory resolve and render.
#
# Exit codes per Automake: 0 pass, 77 skip, 99 hard error (1 fail).

# Page lists ($pages, $man3) are split on blanks on purpose: the pages
# are ours and their names have none.
# shellcheck disable=SC2086

set -u

srcdir=${SS_SRCDIR:-.}
builddir=${SS_BUILDDIR:-.}
man=$srcdir/man
header=$srcdir/include/sealstore.h
sym=$srcdir/src/lib/libsealstore.sym
options=$srcdir/src/lib/options.h
links=$man/man-links.sh
fails=0

fail() {
    echo "t_man: $*" >&2
    fails=$((fails + 1))
}

for f in "$header" "$sym" "$options" "$links" "$srcdir/Makefile.am"; do
    [ -r "$f" ] || { echo "t_man: cannot read $f" >&2; exit 99; }
done
for prog in man lexgrog; do
    if ! command -v "$prog" >/dev/null 2>&1; then
        echo "t_man: $prog not installed (package man-db): cannot check the pages" >&2
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/t_man.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

pages=$(ls "$man"/*.[1-8]) || exit 99
man3=$(ls "$man"/*.3) || exit 99

# Page text as man(1) renders it, on one line, blanks collapsed, ASCII
# (man drops bold and underline itself when its output is not a terminal).
render_flat() {
    LC_ALL=C MANWIDTH=200 env -u MAN_KEEP_FORMATTING man -E ascii -l "$1" 2>/dev/null |
        tr -s ' \t\n' '   '
}
# Page source without font escapes and with "\-" as "-", for finding words.
source_plain() {
    sed 's/\\f[BIRP]//g; s/\\f(..//g; s/\\-/-/g' "$@"
}

# ------------------------------------------------------------ functions
# "SS_API ... ss_name(" in the header; "ss_name;" in the version script.
hdr_funcs=$(sed -n 's/^SS_API.*[ *]\(ss_[a-z0-9_]*\)(.*/\1/p' "$header" | sort -u)
sym_funcs=$(sed -n 's/^[[:space:]]*\(ss_[a-z0-9_]*\);.*/\1/p' "$sym" | sort -u)
if [ -z "$hdr_funcs" ] || [ -z "$sym_funcs" ]; then
    echo "t_man: no functions found" >&2
    exit 99
fi
sh "$links" list $man3 >"$tmp/links" || exit 99

for f in $(printf '%s\n%s\n' "$hdr_funcs" "$sym_funcs" | sort -u); do
    if [ -f "$man/$f.3" ]; then
        page=$man/$f.3
    else
        target=$(awk -v l="$f.3" '$1 == l { print $2 }' "$tmp/links")
        if [ -z "$target" ]; then
            fail "$f: no man page (add man/$f.3, or name $f on a page's NAME line)"
            continue
        fi
        page=$man/$target
    fi
    if ! sh "$links" list "$page" >/dev/null ||
        ! awk '/^\.SH[ \t]+"?NAME/ { on = 1; next } on && /^\./ { exit } on' "$page" |
        grep -qw -- "$f"; then
        fail "$f: not named in the NAME section of ${page##*/}"
    fi
    # its prototype, as declared (without the attribute macros)
    proto=$(awk -v f="$f" '
        /^SS_API/ && index($0, " " f "(") + index($0, "*" f "(") { on = 1 }
        on { s = s " " $0; if ($0 ~ /;/) { print s; exit } }' "$header" |
        sed 's/SS_API//; s/SS_NODISCARD//' | tr -s ' \t' '  ' |
        sed 's/^ //; s/( /(/g; s/ )/)/g')
    if [ -n "$proto" ]; then
        if ! render_flat "$page" | sed 's/( /(/g; s/ )/)/g' | grep -qF -- "$proto"; then
            fail "$f: ${page##*/} does not show the header's prototype: $proto"
        fi
    fi
done

# ------------------------------------------------------------ constants
source_plain $man3 >"$tmp/man3.src"
source_plain "$man/sealstore.3" >"$tmp/sealstore.3"
# SS_X_* in a comment names a family, not a constant
for c in $(grep -o '\bSS_[A-Z0-9_]*[A-Z0-9]\b' "$header" | sort -u); do
    case $c in SS_API | SS_NODISCARD) continue ;; esac
    grep -qw -- "$c" "$tmp/man3.src" || fail "$c (sealstore.h) is on no section 3 page"
done
for c in $(grep -o '\bSS_E_[A-Z0-9_]*[A-Z0-9]\b' "$header" | sort -u); do
    grep -qw -- "$c" "$tmp/sealstore.3" || fail "$c (sealstore.h) is not in sealstore.3"
done

# ------------------------------------------------------ struct members
# "typedef struct NAME { ... } NAME;" (one line or many): "NAME member" lines.
awk '
    {   # drop comments, also those that run over several lines
        if (inc) {
            j = index($0, "*/")
            if (j == 0) $0 = ""; else { $0 = substr($0, j + 2); inc = 0 }
        }
        while ((i = index($0, "/*")) > 0) {
            rest = substr($0, i + 2)
            j = index(rest, "*/")
            if (j == 0) { $0 = substr($0, 1, i - 1); inc = 1; break }
            $0 = substr($0, 1, i - 1) substr(rest, j + 2)
        }
    }
    /typedef struct [a-z_]+ *\{/ {
        match($0, /typedef struct [a-z_]+/)
        name = substr($0, RSTART + 15, RLENGTH - 15)
        body = substr($0, RSTART + RLENGTH)
        sub(/^[^{]*\{/, "", body)
        on = 1
        $0 = body
    }
    on {
        line = $0
        if (line ~ /\}/) { sub(/\}.*/, "", line); on = 0 }
        n = split(line, decl, ";")
        for (i = 1; i <= n; i++) {
            d = decl[i]
            gsub(/\[[^]]*\]/, "", d)
            gsub(/\*/, " ", d)
            m = split(d, part, ",")
            for (j = 1; j <= m; j++) {
                k = split(part[j], w, " ")
                if (k > 0) print name, w[k]
            }
        }
    }' "$header" >"$tmp/members"
[ -s "$tmp/members" ] || { echo "t_man: no struct members found" >&2; exit 99; }
while read -r st member; do
    found=0
    for p in $man3; do
        source_plain "$p" >"$tmp/page"
        if grep -qw -- "$st" "$tmp/page" && grep -qw -- "$member" "$tmp/page"; then
            found=1
            break
        fi
    done
    [ $found = 1 ] || fail "$st.$member (sealstore.h) is on no section 3 page that mentions $st"
done <"$tmp/members"

# -------------------------------------------------------------- daemon
source_plain "$man/sealstored.8" >"$tmp/sealstored.8"
for o in $(sed -n 's/^[[:space:]]*X(\([A-Z0-9_]*\),.*/\1/p' "$options"); do
    grep -qw -- "SEALSTORE_$o" "$tmp/sealstored.8" ||
        fail "SEALSTORE_$o (src/lib/options.h) is not in sealstored.8"
done
# every --flag and SEALSTORE_* word the program's help shows, in its page
check_help() { # PAGE-SOURCE HELP-TEXT-FILE
    for w in $(grep -oE -- '(^|[^a-zA-Z0-9-])--?[a-zA-Z][a-zA-Z0-9-]*' "$2" |
        sed 's/^[^-]*//' | sort -u); do
        grep -qE -- "(^|[^a-zA-Z0-9-])$w([^a-zA-Z0-9-]|\$)" "$1" ||
            fail "${1##*/}: $w (from the program's --help) is not documented"
    done
    for w in $(grep -oE 'SEALSTORE_[A-Z0-9_]+' "$2" | sort -u); do
        grep -qw -- "$w" "$1" || fail "${1##*/}: $w (from the program's --help) is not documented"
    done
}
daemon=$builddir/src/daemon/sealstored
[ -x "$daemon" ] || { echo "t_man: $daemon not built" >&2; exit 99; }
"$daemon" --help >"$tmp/sealstored.help" 2>&1 || { fail "sealstored --help failed"; }
grep -q -- '--socket' "$tmp/sealstored.help" || { echo "t_man: sealstored --help lists no flags" >&2; exit 99; }
check_help "$tmp/sealstored.8" "$tmp/sealstored.help"

# ----------------------------------------------------------------- CLI
cli=$builddir/tools/sealstore
[ -x "$cli" ] || { echo "t_man: $cli not built" >&2; exit 99; }
source_plain "$man/sealstore.1" >"$tmp/sealstore.1"
"$cli" --help >"$tmp/sealstore.help" 2>&1 || fail "sealstore --help failed"
cmds=$(awk '/^Commands:/ { on = 1; next } on && /^$/ { exit }
            on && /^  [a-z]/ { print $1 }' "$tmp/sealstore.help")
[ -n "$cmds" ] || { echo "t_man: sealstore --help lists no commands" >&2; exit 99; }
for c in $cmds; do
    "$cli" help "$c" >>"$tmp/sealstore.help" 2>&1 || fail "sealstore help $c failed"
    grep -qE "^\\.B[IR]? \"?$c\\b" "$tmp/sealstore.1" ||
        fail "sealstore.1: command $c (from sealstore --help) has no entry"
done
check_help "$tmp/sealstore.1" "$tmp/sealstore.help"

# --------------------------------------------------------------- bench
bench=$builddir/bench/sealstore-bench
[ -x "$bench" ] || { echo "t_man: $bench not built" >&2; exit 99; }
source_plain "$man/sealstore-bench.1" >"$tmp/sealstore-bench.1"
"$bench" --help >"$tmp/bench.help" 2>&1 || fail "sealstore-bench --help failed"
check_help "$tmp/sealstore-bench.1" "$tmp/bench.help"
scen=$(awk '/^scenarios:/ { on = 1; next } on && /^$/ { exit } on { print $1 }' "$tmp/bench.help")
[ -n "$scen" ] || { echo "t_man: sealstore-bench --help lists no scenarios" >&2; exit 99; }
for s in $scen; do
    grep -qE "^\\.B $s\$" "$tmp/sealstore-bench.1" ||
        fail "sealstore-bench.1: scenario $s (from --help) has no entry"
done

# ------------------------------------------------- installed and shipped
for p in $pages; do
    grep -qE "(^|[[:space:]])man/${p##*/}([[:space:]]|\\\\|\$)" "$srcdir/Makefile.am" ||
        fail "${p##*/} is not listed in Makefile.am (neither installed nor distributed)"
done

# ------------------------------------------------------------ rendering
have_mandoc=1
if ! command -v mandoc >/dev/null 2>&1; then
    have_mandoc=0
    echo "t_man: mandoc not installed: skipping mandoc -T lint (apt-get install mandoc)" >&2
fi
for p in $pages; do
    out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$p" 2>&1 >/dev/null)
    rc=$?
    [ $rc = 0 ] && [ -z "$out" ] || fail "${p##*/}: man --warnings (status $rc): $out"
    lexgrog "$p" >/dev/null 2>&1 || fail "${p##*/}: lexgrog cannot read its NAME section"
    if [ $have_mandoc = 1 ]; then
        out=$(mandoc -T lint "$p" 2>&1)
        [ -z "$out" ] || fail "${p##*/}: mandoc -T lint: $out"
    fi
done

# the links, installed as make install does, resolve and render
mkdir "$tmp/man3" || exit 99
cp $man3 "$tmp/man3/" || exit 99
sh "$links" install "$tmp/man3" $man3 || fail "man-links.sh install failed"
while read -r link target; do
    name=${link%.3}
    [ -L "$tmp/man3/$link" ] || { fail "link $link was not installed"; continue; }
    out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -M "$tmp" 3 "$name" 2>&1 >"$tmp/out")
    [ -z "$out" ] && grep -q "$name" "$tmp/out" ||
        fail "$link: man 3 $name does not render through the link to $target: $out"
done <"$tmp/links"

if [ $fails -gt 0 ]; then
    echo "t_man: $fails problem(s)" >&2
    exit 1
fi
echo "t_man: $(echo "$pages" | wc -l) pages, $(wc -l <"$tmp/links") links checked"
exit 0
