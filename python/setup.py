# SPDX-License-Identifier: MIT
"""Build the extension sealstore._sealstore against libsealstore.

Where the library comes from, first match:
  1. SEALSTORE_BUILDDIR=<dir>: the build tree of a checkout (<dir>/src/lib/.libs,
     the headers of the checkout this file is in); the extension gets an rpath
     to it, so it runs uninstalled.
  2. pkg-config sealstore: the installed library (make install);
     PKG_CONFIG_PATH finds one under another prefix (an rpath is added for
     a library outside the system's directories).
  3. run from a checkout: its build tree ../build or the source tree itself
     (an in-tree build), as in 1.
"""
import os
import re
import shlex
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
SYSTEM_LIBDIRS = {"/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/lib/x86_64-linux-gnu"}


def build_tree(d):
    lib = os.path.join(d, "src", "lib", ".libs")
    if not os.path.exists(os.path.join(lib, "libsealstore.so")):
        raise SystemExit("sealstore: no libsealstore.so in %s: build the tree first "
                         "(./configure && make)" % lib)
    return {"include_dirs": [os.path.join(TOP, "include")], "library_dirs": [lib],
            "runtime_library_dirs": [lib], "libraries": ["sealstore"]}


def pkg_config():
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs", "sealstore"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    flags = {"include_dirs": [], "library_dirs": [], "runtime_library_dirs": [],
             "libraries": []}
    for f in shlex.split(out):
        if f.startswith("-I"):
            flags["include_dirs"].append(f[2:])
        elif f.startswith("-L"):
            flags["library_dirs"].append(f[2:])
            if os.path.realpath(f[2:]) not in SYSTEM_LIBDIRS:
                flags["runtime_library_dirs"].append(f[2:])
        elif f.startswith("-l"):
            flags["libraries"].append(f[2:])
    return flags


def library():
    if os.environ.get("SEALSTORE_BUILDDIR"):
        return build_tree(os.path.abspath(os.environ["SEALSTORE_BUILDDIR"]))
    flags = pkg_config()
    if flags is not None:
        return flags
    if os.path.exists(os.path.join(TOP, "include", "sealstore.h")):
        for d in (os.path.join(TOP, "build"), TOP):
            if os.path.exists(os.path.join(d, "src", "lib", ".libs", "libsealstore.so")):
                return build_tree(d)
    raise SystemExit("sealstore: libsealstore not found: install it (make install; "
                     "pkg-config sealstore must find it) or set SEALSTORE_BUILDDIR to a "
                     "build tree")


def version():
    try:
        with open(os.path.join(TOP, "configure.ac")) as f:
            m = re.search(r"AC_INIT\(\[sealstore\],\s*\[([^]]+)\]", f.read())
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        return subprocess.run(["pkg-config", "--modversion", "sealstore"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "0"


setup(
    version=version(),
    ext_modules=[Extension("sealstore._sealstore", sources=["_sealstore.c", "explain.c"],
                           depends=["sspy.h"],
                           **library())],
)
