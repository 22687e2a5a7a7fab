#!/bin/sh
# SPDX-License-Identifier: MIT
# make check entry for the Python binding: run the pytest suite in
# python/tests against the package just built (python/pkg/sealstore: the
# Python files and python/.libs/_sealstore.so) and the uninstalled
# libsealstore. Exit 77 (skip) with the reason when
# pytest is not importable; numpy-needing tests skip one by one.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${SS_BUILDDIR:-$PWD}
py=${SS_PYTHON:-python3}
mod=$build/python/.libs/_sealstore.so
pkg=$build/python/pkg

if [ ! -f "$mod" ] || [ ! -f "$pkg/sealstore/_sealstore.so" ]; then
    echo "run-pytest: $mod or $pkg/sealstore was not built" >&2
    exit 99
fi
if ! "$py" -c 'import pytest' 2>/dev/null; then
    echo "SKIP: pytest is not importable by $py: install the Debian package python3-pytest" >&2
    exit 77
fi
"$py" -c 'import numpy' 2>/dev/null ||
    echo "note: numpy is not importable by $py: its tests skip (Debian package python3-numpy)" >&2

PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
LD_LIBRARY_PATH="$build/src/lib/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PYTHONDONTWRITEBYTECODE=1
# for the install test (test_install.py): the tree to build from
SS_SRCDIR=$(cd "$here/.." && pwd)
SS_BUILDDIR=$(cd "$build" && pwd)
export PYTHONPATH LD_LIBRARY_PATH PYTHONDONTWRITEBYTECODE SS_SRCDIR SS_BUILDDIR

# ThreadSanitizer's runtime must be the first library of a process and
# cannot be loaded into the interpreter (it fails with "cannot allocate
# memory in static TLS block"): a --enable-tsan build runs the C tests only.
if ldd "$mod" 2>/dev/null | grep -q libtsan; then
    echo "SKIP: a ThreadSanitizer build cannot be loaded by $py (libtsan must start the process)" >&2
    exit 77
fi

# In a --enable-sanitizers build the module and the library need the ASan
# runtime loaded before anything else; the interpreter's own allocations
# are not ours to leak-check (valgrind covers the module: python/README.md).
asan=$(ldd "$mod" 2>/dev/null | awk '/libasan/ { print $3; exit }')
if [ -n "$asan" ]; then
    LD_PRELOAD="$asan${LD_PRELOAD:+ $LD_PRELOAD}"
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
    export LD_PRELOAD ASAN_OPTIONS
fi

exec "$py" -m pytest -q -p no:cacheprovider "$here/tests"
