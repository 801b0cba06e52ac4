"""Identifiers leave a unit only as salted hashes."""

from __future__ import annotations

import hashlib


def salted_hash(value: str, salt: str, n: int = 16) -> str:
    return hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:n]
