# SPDX-License-Identifier: MIT
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import sealstore


@pytest.fixture
def sock():
    # a short path: unix socket paths are limited to 108 bytes
    d = tempfile.mkdtemp(prefix="sspy-")
    yield os.path.join(d, "s.sock")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def client(sock):
    """A client whose process hosts the store (embedded), so that other
    processes can connect to `sock`."""
    c = sealstore.connect(sock, embed=True)
    yield c
    c.close()


HOST = """
import os, sys, sealstore
c = sealstore.connect(sys.argv[1], embed=True)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def remote_store(sock):
    """A store in another process, to be killed by the test."""
    env = dict(os.environ, SEALSTORE_LOG="error")
    p = subprocess.Popen([sys.executable, "-c", HOST, sock], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    yield p
    p.kill()
    p.wait()
