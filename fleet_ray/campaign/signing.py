"""Ed25519 keys for the audit chain (the ``cryptography`` package).

A private key comes from an environment variable or a file, as PEM (PKCS#8) or a 32-byte seed in
base64 or hex. Key objects never show their bytes: ``repr`` names the key id (a fingerprint of the
public key), pickling a signing key is refused (it must not travel to Ray workers), and errors name
where the key came from, never what it contained.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleet_ray.errors import AuditKeyError


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _decode_bytes(text: str) -> bytes | None:
    t = "".join(text.split())
    if len(t) == 64:
        try:
            return bytes.fromhex(t)
        except ValueError:
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return decode(t + "=" * (-len(t) % 4))
        except (binascii.Error, ValueError):
            continue
    return None


class VerifyKey:
    """A public key that checks receipts."""

    def __init__(self, public: Ed25519PublicKey):
        self._public = public
        self.key_id = _key_id(public)

    def __repr__(self) -> str:
        return f"VerifyKey(key_id={self.key_id!r})"

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._public.verify(signature, message)
            return True
        except InvalidSignature:
            return False

    def pem(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_bytes(cls, material: bytes, source: str) -> VerifyKey:
        text = material.strip()
        if text.startswith(b"-----BEGIN"):
            if b"PRIVATE KEY" in text:
                return SigningKey.from_bytes(material, source).verify_key()
            try:
                key = serialization.load_pem_public_key(text)
            except ValueError as exc:
                raise AuditKeyError(f"{source}: not a PEM public key") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise AuditKeyError(f"{source}: a {type(key).__name__}, not an Ed25519 public key")
            return cls(key)
        raw = text if len(text) == 32 else _decode_bytes(text.decode("ascii", "replace"))
        if raw is None or len(raw) != 32:
            raise AuditKeyError(f"{source}: not an Ed25519 public key (PEM, or 32 bytes in base64 or hex)")
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    @classmethod
    def from_file(cls, path: str | Path) -> VerifyKey:
        try:
            return cls.from_bytes(Path(path).read_bytes(), f"key file {path}")
        except OSError as exc:
            raise AuditKeyError(f"can't read key file {path}: {exc.strerror}") from exc


class SigningKey:
    """An Ed25519 private key. Its bytes are never shown, logged or pickled."""

    def __init__(self, private: Ed25519PrivateKey, source: str = "memory"):
        self._private = private
        self.source = source
        self.key_id = _key_id(private.public_key())

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"

    def __reduce__(self):
        raise TypeError("a SigningKey can't be pickled: it stays in the driver that loaded it")

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self._private.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), "generated")

    def private_pem(self) -> bytes:
        """PEM (PKCS#8, unencrypted) for writing a key file. Handle with care."""
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_bytes(cls, material: bytes, source: str) -> SigningKey:
        text = material.strip()
        if text.startswith(b"-----BEGIN"):
            try:
                key = serialization.load_pem_private_key(text, password=None)
            except (ValueError, TypeError) as exc:
                raise AuditKeyError(f"{source}: not an unencrypted PEM private key") from exc
            if not isinstance(key, Ed25519PrivateKey):
                raise AuditKeyError(f"{source}: a {type(key).__name__}, not an Ed25519 private key")
            return cls(key, source)
        raw = text if len(text) == 32 else _decode_bytes(text.decode("ascii", "replace"))
        if raw is not None and len(raw) == 64:  # libsodium/NaCl layout: seed || public key
            raw = raw[:32]
        if raw is None or len(raw) != 32:
            raise AuditKeyError(
                f"{source}: not an Ed25519 private key (expected PEM, or a 32-byte seed in base64 or hex)"
            )
        return cls(Ed25519PrivateKey.from_private_bytes(raw), source)

    @classmethod
    def from_env(cls, name: str) -> SigningKey | None:
        value = os.environ.get(name)
        if not value:
            return None
        return cls.from_bytes(value.encode(), f"environment variable {name}")

    @classmethod
    def from_file(cls, path: str | Path) -> SigningKey:
        try:
            material = Path(path).read_bytes()
        except OSError as exc:
            raise AuditKeyError(f"can't read key file {path}: {exc.strerror}") from exc
        return cls.from_bytes(material, f"key file {path}")


def load_signing_key(key_env: str = "FLEET_AUDIT_KEY", key_file: str | Path | None = None) -> SigningKey:
    """The campaign's key: ``key_file`` when given, else the environment variable ``key_env``."""
    if key_file is not None:
        return SigningKey.from_file(key_file)
    key = SigningKey.from_env(key_env)
    if key is None:
        raise AuditKeyError(
            f"audit signing is on but no key was found: set {key_env} (PEM, or a 32-byte seed in base64/hex) "
            "or audit.key_file, or turn signing off with audit.signing=False"
        )
    return key


def load_verify_key(public_key_file: str | Path | None = None, key_env: str = "FLEET_AUDIT_KEY",
                    key_file: str | Path | None = None) -> VerifyKey:
    """The trusted key for verification: a public key file, else the private key from file or env."""
    if public_key_file is not None:
        return VerifyKey.from_file(public_key_file)
    if key_file is None and not os.environ.get(key_env):
        raise AuditKeyError(f"no trusted key to verify with: give a public key file (--public-key), "
                            f"the signing key file (--key-file), or set {key_env}")
    return load_signing_key(key_env, key_file).verify_key()
