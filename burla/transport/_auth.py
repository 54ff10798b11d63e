"""HMAC challenge-response, run on every connection before any MessagePack.

Both sides know the cluster token; neither ever sends it::

    server -> client   MAGIC + nonce_s                      (6 + 32 bytes)
    client -> server   nonce_c + HMAC(token, "c" + nonce_s + nonce_c)
    server -> client   HMAC(token, "s" + nonce_c + nonce_s)  (mutual: the
                                                             client checks it)

A server that reads a wrong proof closes the socket without decoding another
byte, so an unauthenticated peer never reaches the MessagePack or pickle
decoders.  The functions here are sans-IO: the async and blocking connections
call them around their own reads and writes.
"""

from __future__ import annotations

import hashlib
import hmac
import os

MAGIC = b"BURLA\x01"
NONCE = 32
DIGEST = 32
CHALLENGE_LEN = len(MAGIC) + NONCE
RESPONSE_LEN = NONCE + DIGEST


def _mac(token: str, tag: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(token.encode(), tag + a + b, hashlib.sha256).digest()


def new_challenge() -> tuple[bytes, bytes]:
    """Return (nonce_s, bytes to send)."""
    nonce = os.urandom(NONCE)
    return nonce, MAGIC + nonce


def answer_challenge(token: str, challenge: bytes) -> tuple[bytes, bytes] | None:
    """Client side: return (nonce_c, response), or None if this is not a burla server."""
    if len(challenge) != CHALLENGE_LEN or not challenge.startswith(MAGIC):
        return None
    nonce_s = challenge[len(MAGIC) :]
    nonce_c = os.urandom(NONCE)
    return nonce_c, nonce_c + _mac(token, b"c", nonce_s, nonce_c)


def check_response(token: str, nonce_s: bytes, response: bytes) -> bytes | None:
    """Server side: return the server's proof if the client's response is valid."""
    if len(response) != RESPONSE_LEN:
        return None
    nonce_c, proof = response[:NONCE], response[NONCE:]
    if not hmac.compare_digest(proof, _mac(token, b"c", nonce_s, nonce_c)):
        return None
    return _mac(token, b"s", nonce_c, nonce_s)


def check_server_proof(token: str, nonce_s: bytes, nonce_c: bytes, proof: bytes) -> bool:
    return len(proof) == DIGEST and hmac.compare_digest(proof, _mac(token, b"s", nonce_c, nonce_s))


def nonce_of(challenge: bytes) -> bytes:
    return challenge[len(MAGIC) :]
