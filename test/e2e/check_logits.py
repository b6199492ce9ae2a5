#!/usr/bin/env python3
"""Compare logits against a golden: check_logits.py ACTUAL.npy EXPECTED.npy [--tol 1e-4]

Passes when the relative L2 error ||actual - expected|| / ||expected|| (over all elements, in
float64) is <= tol AND the argmax over the last axis is identical in every row. Prints both
numbers; exit status 0 on pass, 1 on mismatch, 2 on unusable input. numpy only.
"""
import argparse
import sys

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("actual")
    ap.add_argument("expected")
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative L2 error (default 1e-4)")
    a = ap.parse_args(argv)
    try:
        act = np.load(a.actual).astype(np.float64)
        exp = np.load(a.expected).astype(np.float64)
    except Exception as e:  # noqa: BLE001
        print(f"error: cannot load: {e}")
        return 2
    if act.shape != exp.shape:
        # tolerate a leading batch dimension of 1 on either side
        if act.size == exp.size and act.squeeze().shape == exp.squeeze().shape:
            act, exp = act.reshape(exp.shape), exp
        else:
            print(f"error: shape mismatch: actual {act.shape} vs expected {exp.shape}")
            return 2
    if exp.ndim == 1:
        act, exp = act[None], exp[None]
    if not np.all(np.isfinite(act)):
        print(f"rel_l2=nan argmax_mismatch_rows={exp.shape[0]}/{exp.shape[0]} FAIL (non-finite actual values)")
        return 1
    rel = float(np.linalg.norm(act - exp) / max(np.linalg.norm(exp), 1e-30))
    am_a = act.reshape(-1, act.shape[-1]).argmax(-1)
    am_e = exp.reshape(-1, exp.shape[-1]).argmax(-1)
    bad = np.nonzero(am_a != am_e)[0]
    ok = rel <= a.tol and bad.size == 0
    print(f"rel_l2={rel:.3e} (tol {a.tol:g}) argmax_mismatch_rows={bad.size}/{am_e.size} "
          f"{'PASS' if ok else 'FAIL'}")
    if bad.size:
        print("mismatching rows (row: actual vs expected): "
              + ", ".join(f"{r}: {am_a[r]} vs {am_e[r]}" for r in bad[:10]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
