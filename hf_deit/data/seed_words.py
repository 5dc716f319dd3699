"""numpy's `SeedSequence(key).generate_state(n, dtype=np.uint32)` in plain Python integers, for small keys.

Every augmented image derives its three RNG seeds from its place in the run through SeedSequence's hash (seeding.py).
Building a `SeedSequence` costs about 22 us (numpy arrays for four integers); this is the same arithmetic on Python
ints, about 14 us, with the same results (tests/test_seeding.py compares them on random keys of 1 to 16 words).

The algorithm (numpy/random/bit_generator.pyx, M.E. O'Neill's seed_seq): each entropy word is hashed into a pool of 4
words (`hashmix`, whose multiplier runs through a fixed chain from INIT_A); every pool word is mixed into every other
(`mix`); then the output words are hashed out of the pool (a second chain from INIT_B). The chains do not depend on
the key, so they are computed once here.
"""

from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF
POOL_SIZE = 4  # SeedSequence's default pool_size
INIT_A, MULT_A = 0x43B0D7E5, 0x931E8875  # hashmix while mixing entropy into the pool
INIT_B, MULT_B = 0x8B51F9DD, 0x58F38DED  # hashmix while generating the output
MIX_MULT_L, MIX_MULT_R = 0xCA01F9DD, 0x4973F715
XSHIFT = 16  # 4 bytes * 8 // 2
MAX_KEY_WORDS = 16  # longer keys go to numpy's SeedSequence itself
MAX_OUTPUT_WORDS = 16


def _chain(start: int, multiplier: int, length: int) -> list[tuple[int, int]]:
    """(the hash constant XORed in, the multiplier) of each successive hashmix call."""
    pairs, constant = [], start
    for _ in range(length):
        following = (constant * multiplier) & MASK32
        pairs.append((constant, following))
        constant = following
    return pairs


# hashmix calls while mixing: one per pool word, one per ordered pair of pool words, 4 per word beyond the pool
_MIX_CHAIN = _chain(INIT_A, MULT_A, POOL_SIZE + POOL_SIZE * (POOL_SIZE - 1) + POOL_SIZE * (MAX_KEY_WORDS - POOL_SIZE))
_OUT_CHAIN = _chain(INIT_B, MULT_B, MAX_OUTPUT_WORDS)
_PAIRS = [(source, target) for source in range(POOL_SIZE) for target in range(POOL_SIZE) if source != target]


def _hashmix(value: int, step: tuple[int, int]) -> int:
    constant, multiplier = step
    value = ((value ^ constant) * multiplier) & MASK32
    return value ^ (value >> XSHIFT)


def _mix(x: int, y: int) -> int:
    result = (MIX_MULT_L * x - MIX_MULT_R * y) & MASK32
    return result ^ (result >> XSHIFT)


def seed_words(key: tuple[int, ...] | list[int], n_words: int = 3) -> list[int]:
    """`np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(n_words, np.uint32)` as Python ints.

    Each key element is taken modulo 2**32 (one entropy word each, as SeedSequence sees the masked list)."""
    words = [int(k) & MASK32 for k in key]
    if not words or len(words) > MAX_KEY_WORDS or n_words > MAX_OUTPUT_WORDS:
        state = np.random.SeedSequence(words).generate_state(n_words, dtype=np.uint32)
        return [int(word) for word in state]
    pool = [_hashmix(words[i] if i < len(words) else 0, _MIX_CHAIN[i]) for i in range(POOL_SIZE)]
    step = POOL_SIZE
    for source, target in _PAIRS:
        pool[target] = _mix(pool[target], _hashmix(pool[source], _MIX_CHAIN[step]))
        step += 1
    for word in words[POOL_SIZE:]:
        for target in range(POOL_SIZE):
            pool[target] = _mix(pool[target], _hashmix(word, _MIX_CHAIN[step]))
            step += 1
    return [_hashmix(pool[i % POOL_SIZE], _OUT_CHAIN[i]) for i in range(n_words)]


__all__ = ["seed_words"]
