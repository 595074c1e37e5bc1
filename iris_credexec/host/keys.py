"""The broker's signing keys: ES256, files 0600 in a 0700 directory, rotated without a gap.

A new key is published in the JWKS as soon as it exists but signs only after
`publish_before_signing_seconds`, so the JWKS uploaded to Google can be updated first;
an older key stays in the JWKS until the last token it signed has expired.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

from .. import fsutil


class Key(NamedTuple):
    kid: str
    created: float
    signs_from: float
    pem: bytes

    def private_key(self) -> Any:
        from cryptography.hazmat.primitives import serialization

        return serialization.load_pem_private_key(self.pem, password=None)

    def jwk(self) -> dict[str, Any]:
        from jwt.algorithms import ECAlgorithm

        doc: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self.private_key().public_key()))
        return {**doc, "kid": self.kid, "alg": "ES256", "use": "sig"}


class KeyStore:
    def __init__(self, directory: str, max_token_lifetime: int) -> None:
        self.directory = directory
        self.max_token_lifetime = max_token_lifetime
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)

    def keys(self) -> list[Key]:
        found = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json"):
                continue
            try:
                data, _ = fsutil.read_regular(os.path.join(self.directory, name), 64 * 1024)
                doc = json.loads(data)
                found.append(Key(doc["kid"], float(doc["created"]), float(doc["signs_from"]), doc["pem"].encode()))
            except (OSError, ValueError, KeyError, fsutil.UnsafePath):
                continue
        return sorted(found, key=lambda k: k.signs_from)

    def create(self, signs_from: float | None = None) -> Key:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        now = time.time()
        key = Key(kid=os.urandom(8).hex(), created=now, signs_from=now if signs_from is None else signs_from, pem=pem)
        doc = {"kid": key.kid, "created": key.created, "signs_from": key.signs_from, "pem": pem.decode()}
        fsutil.atomic_write(os.path.join(self.directory, f"{key.kid}.json"), json.dumps(doc).encode(), mode=0o600)
        return key

    def ensure(self) -> None:
        """Generate the first key on first start."""
        if not self.keys():
            self.create()

    def rotate(self, publish_before_signing: int) -> Key:
        return self.create(signs_from=time.time() + publish_before_signing)

    def signing_key(self, now: float | None = None) -> Key:
        now = time.time() if now is None else now
        ready = [k for k in self.keys() if k.signs_from <= now]
        if not ready:
            raise RuntimeError(f"no signing key in {self.directory}")
        return ready[-1]

    def published(self, now: float | None = None) -> list[Key]:
        """Every key that may sign now or later, or signed a token that has not expired yet."""
        now = time.time() if now is None else now
        keys = self.keys()
        current = self.signing_key(now)
        keep = []
        for key in keys:
            successors = [k for k in keys if k.signs_from > key.signs_from]
            retired_at = min((k.signs_from for k in successors if k.signs_from <= now), default=None)
            if (
                key is current
                or key.signs_from > now
                or retired_at is None
                or retired_at + self.max_token_lifetime > now
            ):
                keep.append(key)
        return keep

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.published()]}
