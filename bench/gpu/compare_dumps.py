#!/usr/bin/env python3
"""Compares two TLC_VULKAN_DUMP folders (the bindings after every dispatch,
TLC_VULKAN_SYNC_EACH=1) file by file, as float32: prints the largest
relative difference per file in dispatch order, to find the first kernel
whose results differ between two devices (e.g. lavapipe and a GPU)."""
import os
import sys

import numpy as np


def main(a_dir, b_dir, limit=40):
    shown = 0
    for name in sorted(os.listdir(a_dir)):
        path = os.path.join(b_dir, name)
        if not os.path.exists(path):
            continue
        a = np.fromfile(os.path.join(a_dir, name), dtype=np.float32)
        b = np.fromfile(path, dtype=np.float32)
        if a.shape != b.shape:
            print("%s: sizes differ" % name)
            continue
        finite = np.isfinite(a) & np.isfinite(b)
        scale = max(float(np.max(np.abs(a[finite]))) if finite.any() else 0.0, 1e-30)
        diff = float(np.max(np.abs(a[finite] - b[finite]))) / scale if finite.any() else 0.0
        bad = int((~finite & ~(np.isnan(a) & np.isnan(b))).sum())
        if diff > 1e-5 or bad:
            print("%s: max rel diff %.3g, non-finite mismatches %d" % (name, diff, bad))
            shown += 1
            if shown >= limit:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
