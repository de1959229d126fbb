"""Redis key layout: user names are encoded, and each object's keys share one hash tag.

Why encode: a breaker named ``a:b`` must never read or write the keys of a breaker named ``a``
with some suffix ``b``; a name holding ``{`` or ``}`` must not change which Redis Cluster slot a
key lands in. We percent-encode every byte of the UTF-8 name outside ``[A-Za-z0-9._-]``
(``%`` included), which is injective and leaves no ``:``, ``{``, ``}`` or whitespace behind.
A lone surrogate (``"\\udcff"``, as ``os.listdir`` returns for a non-UTF-8 file name) is text
too: it is encoded with ``surrogatepass`` (its three bytes, percent-encoded), so every
``str`` has a key and decodes back to itself, on every backend.

Why hash tags: every Lua script must touch keys of one slot only (Redis Cluster refuses
``CROSSSLOT`` scripts). All keys of one object (one breaker, one DLQ, one checkpoint namespace)
are named ``<prefix>:{<kind>:<encoded name>}:<part>``, so the tag is the part between the first
``{`` and the first ``}``, and it can contain no brace of the user's.
"""

from __future__ import annotations

import re

__all__ = ["decode_name", "encode_name", "object_key", "validate_prefix"]

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._\-:]{1,64}$")


def encode_name(name: str) -> str:
    """Encode a user-supplied name so it is safe inside a key and inside a hash tag.

    >>> encode_name("payments:{eu}")
    'payments%3A%7Beu%7D'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    out: list[str] = []
    for byte in name.encode("utf-8", "surrogatepass"):
        if byte in _SAFE:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def decode_name(encoded: str) -> str:
    """Invert :func:`encode_name` (used when listing objects back from Redis)."""
    raw = bytearray()
    i = 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == "%":
            raw.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(ch))
            i += 1
    return raw.decode("utf-8", "surrogatepass")


def validate_prefix(prefix: str) -> str:
    """Check a key prefix: 1-64 chars of ``[A-Za-z0-9._-:]`` (no braces, no spaces)."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"prefix must be 1-64 characters of letters, digits, '.', '_', '-' or ':', "
            f"got {prefix!r}"
        )
    return prefix


def object_key(prefix: str, kind: str, name: str, part: str) -> str:
    """The key of one ``part`` of the object ``name`` of ``kind``.

    >>> object_key("aioresil", "cb", "a b", "state")
    'aioresil:{cb:a%20b}:state'
    """
    return f"{prefix}:{{{kind}:{encode_name(name)}}}:{part}"
