"""The `forwarder` AddressProvider: keyless CREATE2 deposit addresses (DESIGN.md §7a).

A deposit address is the address at which the install's DepositFactory would create an
EIP-1167 clone of its one DepositForwarder under the salt keccak256(destination, salt). It is
computed here offline, with no node: the factory's own `forwarderAddress` gives the same
answer (tests compare them on anvil). The destination is part of the derivation, so money sent
to the address can only ever be claimed to that destination, by anyone who pays the gas.
"""

import re
import secrets

from eth_utils import keccak as _keccak

ZERO_ADDRESS = "0x" + "0" * 40
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
# EIP-1167 minimal proxy creation code around the implementation address (OpenZeppelin Clones).
CLONE_PREFIX = bytes.fromhex("3d602d80600a3d3981f3363d3d373d3d3d363d73")
CLONE_SUFFIX = bytes.fromhex("5af43d82803e903d91602b57fd5bf3")
CLAIM_SIGNATURE = "claim(address,bytes32[],address[])"
# Separates our salts from anyone else's use of the same factory.
SALT_DOMAIN = b"stablebill/deposit/v1"


def keccak(data: bytes) -> bytes:
    return bytes(_keccak(data))


def _raw(address: str) -> bytes:
    if not ADDRESS_RE.fullmatch(address):
        raise ValueError(f"not a 0x-prefixed 20-byte address: {address!r}")
    return bytes.fromhex(address[2:])


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def implementation_address(factory: str) -> str:
    """Where the factory's constructor created the forwarder implementation: CREATE from the
    factory at nonce 1 (a contract's first nonce), i.e. keccak256(rlp([factory, 1]))."""
    return "0x" + keccak(b"\xd6\x94" + _raw(factory) + b"\x01")[12:].hex()


def clone_code_hash(implementation: str) -> bytes:
    return keccak(CLONE_PREFIX + _raw(implementation) + CLONE_SUFFIX)


def forwarder_salt(destination: str, salt: bytes) -> bytes:
    """The CREATE2 salt: abi.encode(destination, salt) hashed, as DepositFactory does."""
    if len(salt) != 32:
        raise ValueError("a salt is 32 bytes")
    return keccak(bytes(12) + _raw(destination) + salt)


def forwarder_address(*, factory: str, destination: str, salt: bytes) -> str:
    """The lower-case deposit address of (destination, salt) under `factory`."""
    code_hash = clone_code_hash(implementation_address(factory))
    digest = keccak(b"\xff" + _raw(factory) + forwarder_salt(destination, salt) + code_hash)
    return "0x" + digest[12:].hex()


def new_salt_seed() -> str:
    """A wallet's secret seed of salts: addresses of one merchant cannot be guessed or linked
    from the outside, and two installs sharing a factory never collide."""
    return secrets.token_hex(16)


def payment_salt(*, seed: str, index: int) -> bytes:
    """The salt of a wallet's `index`-th deposit address (one per payment)."""
    return keccak(SALT_DOMAIN + bytes.fromhex(seed) + _word(index))


def parse_account_address(raw: str) -> str:
    """A merchant's account address, lower case; a mixed-case one must carry a valid EIP-55
    checksum (a typo in one character is caught), and the zero address is refused."""
    text = raw.strip()
    if not ADDRESS_RE.fullmatch(text):
        raise ValueError("Enter the 0x address of your account: 0x followed by 40 hex digits.")
    body = text[2:]
    if body != body.lower() and body != body.upper():
        digest = keccak(body.lower().encode()).hex()
        expected = "".join(
            c.upper() if int(d, 16) >= 8 else c for c, d in zip(body.lower(), digest, strict=False)
        )
        if expected != body:
            raise ValueError(
                "This address's capitalisation (its EIP-55 checksum) is wrong: check it for a "
                "typo, or paste it again from your wallet."
            )
    if text.lower() == ZERO_ADDRESS:
        raise ValueError("The zero address burns everything sent to it; enter your own address.")
    return text.lower()


def claim_calldata(*, destination: str, salts: list[bytes], tokens: list[str]) -> str:
    """0x calldata of DepositFactory.claim(destination, salts, tokens), ABI-encoded by hand
    (two dynamic arrays of static words; tests check it against eth_abi)."""
    selector = keccak(CLAIM_SIGNATURE.encode())[:4]
    salts_at = 32 * 3
    tokens_at = salts_at + 32 * (1 + len(salts))
    head = bytes(12) + _raw(destination) + _word(salts_at) + _word(tokens_at)
    salts_part = _word(len(salts)) + b"".join(salts)
    tokens_part = _word(len(tokens)) + b"".join(bytes(12) + _raw(t) for t in tokens)
    if any(len(s) != 32 for s in salts):
        raise ValueError("a salt is 32 bytes")
    return "0x" + (selector + head + salts_part + tokens_part).hex()
