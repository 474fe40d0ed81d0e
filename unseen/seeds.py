"""Deterministic seeds for every job, derived from the run seed and the job's role."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *keys: object) -> int:
    """Return a 31-bit seed that depends only on ``seed`` and ``keys``.

    Jobs that must be independent (fold 0 vs fold 1) get different seeds; the
    same job in a rerun gets the same seed. Uses SHA-256, so it does not depend
    on Python's per-process string hashing.
    """
    text = repr((int(seed),) + tuple(str(k) for k in keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF
