"""Seeds derived from their parts: random starts, library attacks, text attacks, corruptions and
targets are seeded per (run seed, example id, eps, ...), so results do not depend on batching,
resuming or the process (a leaf module: every attack module may import it)."""

from __future__ import annotations

import hashlib


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (stable across processes and platforms)."""
    text = "|".join(f"{p:.12g}" if isinstance(p, float) else str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
