# SPDX-License-Identifier: MIT
import os
import shutil
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
