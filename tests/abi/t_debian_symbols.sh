#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The Debian symbols file (debian/libsealstore0.symbols) against the
# version script (src/lib/libsealstore.sym): the same version nodes, and
# every exported function under the node that exports it, nothing more or
# less. The package build checks the file against the built library
# (dpkg-gensymbols -c4); this catches the drift in `make check`, where a
# new public function is added.
#
# Exit codes per Automake: 0 pass, 77 skip, 99 hard error (1 fail).

set -u

srcdir=${SS_SRCDIR:-.}
sym=$srcdir/src/lib/libsealstore.sym
deb=$srcdir/debian/libsealstore0.symbols

for f in "$sym" "$deb"; do
    [ -r "$f" ] || { echo "t_debian_symbols: cannot read $f" >&2; exit 99; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/t_debian_symbols.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

# "NAME@NODE" per line from the version script: a node opens with
# "NODE {", its global names end in ";", "local:" ends the list, "}" the node
awk '
    /^[A-Za-z0-9_.]+[ \t]*\{/ { node = $1; sub(/\{.*/, "", node); print node "@" node; glob = 0; next }
    /global:/ { glob = 1; next }
    /local:/ { glob = 0; next }
    /^\}/ { node = ""; next }
    glob && node != "" && /;/ { s = $1; sub(/;.*/, "", s); if (s != "") print s "@" node }
' "$sym" | sort >"$tmp/want"
# " NAME@NODE VERSION" lines of the symbols file
sed -n 's/^ \([^ ]*@[^ ]*\) .*/\1/p' "$deb" | sort >"$tmp/have"

if [ ! -s "$tmp/want" ] || [ ! -s "$tmp/have" ]; then
    echo "t_debian_symbols: no symbols read (want $(wc -l <"$tmp/want"), have $(wc -l <"$tmp/have"))" >&2
    exit 99
fi
head -1 "$deb" | grep -q '^libsealstore\.so\.0 libsealstore0 ' ||
    { echo "t_debian_symbols: $deb does not start with 'libsealstore.so.0 libsealstore0'" >&2; exit 1; }
if ! diff -u "$tmp/want" "$tmp/have" >"$tmp/diff"; then
    echo "t_debian_symbols: $deb differs from $sym (- in the version script only, + in the symbols file only):" >&2
    cat "$tmp/diff" >&2
    echo "t_debian_symbols: add new functions as ' NAME@NODE VERSION' lines, VERSION the first release that has them" >&2
    exit 1
fi
echo "t_debian_symbols: $(wc -l <"$tmp/have") symbols and version nodes agree"
exit 0
