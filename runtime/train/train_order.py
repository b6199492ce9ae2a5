"""Reference for the example order of `tlc-run train` (TrainData::batch).

Epoch e is a permutation of range(n): Fisher-Yates driven by splitmix64
seeded with seed ^ (e * 0x9E3779B97F4A7C15) (mod 2**64); identity when not
shuffling. Micro batch k takes examples k*B .. k*B+B-1 of the concatenated
epoch orders. Run as a script: train_order.py STEP B N SEED SHUFFLE(0|1)
prints the example indices of that micro batch, one line, space separated.
"""

import sys

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + GOLDEN) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def order(n, seed, epoch, shuffle=True):
    """Example indices of epoch `epoch` (0-based)."""
    p = list(range(n))
    if not shuffle:
        return p
    rng = SplitMix64((seed ^ (epoch * GOLDEN)) & MASK)
    for i in range(n - 1, 0, -1):
        j = rng.next() % (i + 1)
        p[i], p[j] = p[j], p[i]
    return p


def batch_indices(step, B, n, seed, shuffle):
    """Example indices of micro batch `step` (0-based), B of them."""
    out = []
    cache = {}
    for b in range(B):
        g = step * B + b
        e, pos = divmod(g, n)
        if e not in cache:
            cache[e] = order(n, seed, e, shuffle)
        out.append(cache[e][pos])
    return out


if __name__ == "__main__":
    step, B, n, seed, shuffle = (int(a, 0) for a in sys.argv[1:6])
    print(" ".join(str(i) for i in batch_indices(step, B, n, seed, bool(shuffle))))
