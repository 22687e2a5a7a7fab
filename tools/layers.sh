#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The store's layers, checked from the built objects: the file -> file graph
# of direct references (A -> B when A's object uses a symbol B's object
# defines) among the store's files (loop.c and store*.c) must have no
# cycle. The map it keeps true is at the top of src/lib/internal.h.
#
#   tools/layers.sh [-g GROUP] [ARCHIVE | OBJDIR]
#
# GROUP is an awk regular expression naming the files to check: by default
# the store's, 'loop|store[a-z_]*'; 'spill[a-z_]*' checks the spill
# engine's files (whose order is in spill_int.h and internal.h's map).
#
# Reads the library's convenience archive (libsealstore-core.a: exactly
# the objects of the current build) or, given a directory without one, the
# loose objects libsealstore_core_la-NAME.o in it. By default the archive
# under $SS_BUILDDIR (or .)/src/lib/.libs, else src/lib. Prints the graph
# ("A -> B  (n symbols)"), then either "layers: no cycle" (exit 0) or the
# edges among the files left in a cycle (exit 1); 99 when there is nothing
# to read. POSIX sh, awk and nm only.

set -u

group='loop|store[a-z_]*'
if [ $# -ge 2 ] && [ "$1" = -g ]; then
    group=$2
    shift 2
fi
prefix=libsealstore_core_la-
arch=libsealstore-core.a
if [ $# -ge 1 ]; then
    src=$1
else
    b=${SS_BUILDDIR:-.}
    src=$b/src/lib/.libs
    [ -e "$src/$arch" ] || src=$b/src/lib
fi
[ -d "$src" ] && [ -e "$src/$arch" ] && src=$src/$arch

tmp=$(mktemp -d "${TMPDIR:-/tmp}/layers.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

# "D sym file" for each definition, "U sym file" for each use; file is the
# source's name: libsealstore_core_la-store_obj.o -> store_obj
if [ -f "$src" ]; then
    { nm -A --defined-only "$src" | sed 's/^/D /'; nm -A -u "$src" | sed 's/^/U /'; }
else
    for o in "$src/${prefix}"*.o; do
        [ -e "$o" ] || continue
        { nm -A --defined-only "$o" | sed 's/^/D /'; nm -A -u "$o" | sed 's/^/U /'; }
    done
fi | awk -v p="$prefix" -v g="$group" '
    {
        # "D archive:member.o:addr T sym" or "U member.o: U sym"
        n = split($2, f, ":"); m = f[n - 1]; sub(".*/", "", m)
        if (m !~ ("^" p "(" g ")\\.o$")) next
        sub("^" p, "", m); sub("\\.o$", "", m)
        if ($1 == "D" && NF == 4 && $3 ~ /^[TDBRCGSV]$/) print "D", $4, m
        else if ($1 == "U") print "U", $NF, m
    }' > "$tmp/syms" || exit 99
if ! [ -s "$tmp/syms" ]; then
    echo "layers: no objects of ($group) in $src" >&2
    exit 99
fi

# edges with the number of distinct symbols behind each
awk 'NR == FNR { if ($1 == "D") def[$2] = $3; next }
     $1 == "U" && ($2 in def) && def[$2] != $3 { n[$3 " -> " def[$2]]++ }
     END { for (e in n) print e, n[e] }' "$tmp/syms" "$tmp/syms" | sort > "$tmp/edges"
# (the file is read twice so every definition is known before any use)

awk '{ printf "  %-14s -> %-14s (%d)\n", $1, $3, $4 }' "$tmp/edges"

# Kahn: drop files that call nothing left, until none can go; what stays
# is in a cycle or calls into one.
awk '{ out[$1] = out[$1] " " $3; nodes[$1]; nodes[$3]; from[NR] = $1; to[NR] = $3 }
     END {
         do {
             gone = 0
             for (v in nodes) {
                 left = 0
                 for (i = 1; i <= NR; i++)
                     if (from[i] == v && (to[i] in nodes))
                         left = 1
                 if (!left) { delete nodes[v]; gone = 1 }
             }
         } while (gone)
         bad = 0
         for (i = 1; i <= NR; i++)
             if ((from[i] in nodes) && (to[i] in nodes)) {
                 if (!bad) print "layers: cycle among these calls:"
                 print "  " from[i] " -> " to[i]
                 bad = 1
             }
         if (!bad) print "layers: no cycle"
         exit bad
     }' "$tmp/edges"
