#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The store's files call one way, and so do the spill engine's:
# tools/layers.sh finds no cycle in the file -> file graph of direct calls
# among the built objects of each group (the layers are listed at the top
# of src/lib/internal.h).
#
# Exit codes per Automake: 0 pass, 1 fail, 77 skip (no nm), 99 hard error.

srcdir=${SS_SRCDIR:-.}

if ! command -v nm >/dev/null 2>&1; then
    echo "t_layers: nm(1) is not installed" >&2
    exit 77
fi
sh "$srcdir/tools/layers.sh" || exit $?
exec sh "$srcdir/tools/layers.sh" -g 'spill[a-z_]*'
