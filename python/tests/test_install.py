# SPDX-License-Identifier: MIT
"""pip install of the package into a fresh venv, offline, as python/README.md
says: from a copy of the source tree (so the checkout stays clean), built
against the library of this build tree (SEALSTORE_BUILDDIR) or found by
pkg-config; the installed module then imports and works in a process that
has neither PYTHONPATH nor LD_LIBRARY_PATH (the extension's rpath finds the
library)."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SRC = os.environ.get("SS_SRCDIR")
BUILD = os.environ.get("SS_BUILDDIR")

CHECK = textwrap.dedent("""
    import inspect, os, pickle, sys, tempfile
    import sealstore
    assert sealstore.__file__.startswith(sys.prefix), sealstore.__file__
    assert os.path.exists(os.path.join(os.path.dirname(sealstore.__file__), "py.typed"))
    assert os.path.exists(os.path.join(os.path.dirname(sealstore.__file__), "__init__.pyi"))
    assert str(inspect.signature(sealstore.Client.get)) == "(self, /, id, timeout=None, trust=None)"
    d = tempfile.mkdtemp()
    with sealstore.connect(os.path.join(d, "s"), embed=True) as c:
        ref = pickle.loads(pickle.dumps(c.put_ref({"a": [1, 2, 3]})))
        assert ref.get() == {"a": [1, 2, 3]}
    print("ok", sealstore.__file__)
""")


def pip_ready():
    if not SRC or not BUILD:
        pytest.skip("SS_SRCDIR/SS_BUILDDIR unset: run through run-pytest.sh")
    for mod, pkg in (("venv", "python3-venv"), ("pip", "python3-pip"),
                     ("setuptools", "python3-setuptools"), ("wheel", "python3-wheel")):
        r = subprocess.run([sys.executable, "-c", "import " + mod], capture_output=True)
        if r.returncode != 0:
            pytest.skip("%s is not importable by %s: install the Debian package %s"
                        % (mod, sys.executable, pkg))


def install(tmp_path, env_extra):
    top = tmp_path / "top"
    shutil.copytree(os.path.join(SRC, "python"), top / "python", ignore=shutil.ignore_patterns(
        "tests", "build", "dist", "*.egg-info", "__pycache__"))
    shutil.copytree(os.path.join(SRC, "include"), top / "include")
    shutil.copy(os.path.join(SRC, "configure.ac"), top / "configure.ac")
    venv = tmp_path / "v"
    # the system's pip serves the venv (--system-site-packages): no ensurepip
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "SEALSTORE_BUILDDIR", "PKG_CONFIG_PATH")}
    env.update(env_extra)
    p = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                        "--no-build-isolation", str(top / "python")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, "pip install failed:\n" + p.stdout + p.stderr
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")}
    r = subprocess.run([str(venv / "bin" / "python"), "-c", CHECK], env=env, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "the installed module failed:\n" + r.stderr
    assert r.stdout.startswith("ok " + str(venv))


def asan_build():
    so = os.path.join(BUILD or "", "python", ".libs", "_sealstore.so")
    out = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
    return "libasan" in out


@pytest.fixture
def ready():
    pip_ready()
    if asan_build():
        pytest.skip("a sanitizer build's library needs the ASan runtime preloaded: "
                    "the venv test runs in the normal build")


def test_pip_install_against_the_build_tree(tmp_path, ready):
    install(tmp_path, {"SEALSTORE_BUILDDIR": BUILD})


def test_pip_install_with_pkg_config(tmp_path, ready):
    # a sealstore.pc as make install writes it, pointing at this build tree
    pc = tmp_path / "pc"
    pc.mkdir()
    (pc / "sealstore.pc").write_text(textwrap.dedent("""\
        Name: sealstore
        Description: sealstore client library
        Version: 0
        Cflags: -I%s
        Libs: -L%s -lsealstore
        """ % (os.path.join(SRC, "include"), os.path.join(BUILD, "src", "lib", ".libs"))))
    install(tmp_path, {"PKG_CONFIG_PATH": str(pc)})
