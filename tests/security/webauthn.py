"""A software passkey: what a phone or security key does, in a few lines of `fido2` and
`cryptography`, so the tests drive allauth's real WebAuthn checks (challenge, origin, RP ID,
signature, counter) with nothing patched."""

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    Aaguid,
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)

FLAGS = AuthenticatorData.FLAG


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else websafe_decode(value)


def _public_key(options: dict) -> dict:
    options = json.loads(json.dumps(options, default=_json_default))
    return options.get("publicKey", options)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return websafe_encode(value)
    if hasattr(value, "items"):
        return dict(value)
    return str(value)


@dataclass
class SoftPasskey:
    origin: str = "https://testserver"
    rp_id: str = "testserver"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    user_handle: bytes = b""
    counter: int = 0

    def create(self, options: dict, *, user_verified: bool = True) -> dict:
        """navigator.credentials.create(): a new key pair, attested with format "none"."""
        public_key = _public_key(options)
        self.user_handle = _bytes(public_key["user"]["id"])
        client_data = CollectedClientData.create(
            type="webauthn.create", challenge=public_key["challenge"], origin=self.origin
        )
        credential = AttestedCredentialData.create(
            Aaguid.NONE, self.credential_id, ES256.from_cryptography_key(self.key.public_key())
        )
        flags = FLAGS.UP | FLAGS.AT | (FLAGS.UV if user_verified else 0)
        auth_data = AuthenticatorData.create(
            hashlib.sha256(self.rp_id.encode()).digest(), flags, self.counter, credential
        )
        attestation = AttestationObject.create("none", auth_data, {})
        return {
            "id": websafe_encode(self.credential_id),
            "rawId": websafe_encode(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": websafe_encode(client_data),
                "attestationObject": websafe_encode(attestation),
            },
            "clientExtensionResults": {},
        }

    def get(self, options: dict, *, user_verified: bool = True) -> dict:
        """navigator.credentials.get(): sign the server's challenge."""
        public_key = _public_key(options)
        self.counter += 1
        client_data = CollectedClientData.create(
            type="webauthn.get", challenge=public_key["challenge"], origin=self.origin
        )
        flags = FLAGS.UP | (FLAGS.UV if user_verified else 0)
        auth_data = AuthenticatorData.create(
            hashlib.sha256(self.rp_id.encode()).digest(), flags, self.counter
        )
        signature = self.key.sign(
            bytes(auth_data) + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": websafe_encode(self.credential_id),
            "rawId": websafe_encode(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": websafe_encode(client_data),
                "authenticatorData": websafe_encode(auth_data),
                "signature": websafe_encode(signature),
                "userHandle": websafe_encode(self.user_handle),
            },
            "clientExtensionResults": {},
        }
