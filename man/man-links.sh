#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Links for the other names a man page documents. A page documents a
# family of calls (ss_connect.3: ss_connect, ss_disconnect); its NAME line
# is the one list of those names, and this script turns it into links, so
# the two cannot disagree:
#
#   man-links.sh list PAGE...            print "LINK TARGET" per extra name
#   man-links.sh install DIR PAGE...     make DIR/LINK a symlink to TARGET
#   man-links.sh uninstall DIR PAGE...   remove those links
#
# LINK is NAME.SECTION for every name on the NAME line other than the
# page's own; TARGET is the page's file name (same directory). Symlinks
# rather than .so pages: mandoc and lintian call .so fragile.

set -eu

usage() {
    echo "usage: $0 list PAGE... | install DIR PAGE... | uninstall DIR PAGE..." >&2
    exit 2
}

# The names on PAGE's NAME line(s), one per line.
page_names() {
    awk '
        /^\.SH[ \t]+"?NAME"?[ \t]*$/ { on = 1; next }
        on && /^\./ { exit }
        on {
            line = line " " $0
            if ($0 !~ /\\$/) exit
            sub(/\\$/, "", line)
        }
        END {
            sub(/\\-.*/, "", line)       # the names end at "\-"
            gsub(/\\/, "", line)         # escapes such as "\-" in a name
            n = split(line, a, ",")
            for (i = 1; i <= n; i++) {
                gsub(/^[ \t]+|[ \t]+$/, "", a[i])
                if (a[i] != "") print a[i]
            }
        }' "$1"
}

links() {
    for page in "$@"; do
        base=${page##*/}
        sect=${base##*.}
        own=${base%.*}
        for name in $(page_names "$page"); do
            [ "$name" = "$own" ] || echo "$name.$sect $base"
        done
    done
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
list)
    links "$@"
    ;;
install | uninstall)
    [ $# -ge 1 ] || usage
    dir=$1
    shift
    links "$@" | while read -r link target; do
        rm -f "$dir/$link"
        [ "$cmd" = uninstall ] || ln -s "$target" "$dir/$link"
    done
    ;;
*)
    usage
    ;;
esac
