"""The built-in sha256 the hot path uses gives hashlib's digests (cache keys and policy hashes depend on it)."""

import hashlib

import pytest

from iris_credexec.digest import sha256_hex


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 100])
def test_same_as_hashlib(data: bytes) -> None:
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
