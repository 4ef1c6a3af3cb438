"""Seeds: every seed widget takes 0..2**64-1 (ComfyUI's range), but torch's CPU generator (mt19937)
keeps only the low 32 bits of what it is seeded with, so seed and seed + 2**32 drew the same noise.
:func:`generator` derives the generator from the full 64-bit seed: seeds below 2**32 seed it as they
are (earlier results are kept to the bit), larger seeds through a 64-bit hash (BLAKE2b) of the whole
value, so no two seeds that differ only above bit 32 share a stream.
"""
from __future__ import annotations

import hashlib

import torch

SEED_SPACE = 2 ** 64


def effective_seed(seed: int, offset: int = 0) -> int:
    """The value handed to ``manual_seed`` for ``seed + offset`` (taken modulo 2**64).

    >>> effective_seed(5), effective_seed(5 + 2 ** 32) == effective_seed(5)
    (5, False)
    """
    s = (int(seed) + int(offset)) % SEED_SPACE
    if s < 2 ** 32:
        return s
    digest = hashlib.blake2b(s.to_bytes(8, "little"), digest_size=8, person=b"flipbook-seed").digest()
    return int.from_bytes(digest, "little")


def generator(seed: int, offset: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator for ``seed + offset`` (see the module doc)."""
    return torch.Generator(device).manual_seed(effective_seed(seed, offset))
