#!/usr/bin/env python3
"""Compares the updates (adapter - init) of two adapter folders: relative L2
error per tensor <= 1e-4. Usage: compare_adapters.py INIT A B"""
import sys

import numpy as np
from safetensors.numpy import load_file

init, a, b = (load_file(d + "/adapter_model.safetensors") for d in sys.argv[1:4])
worst = 0.0
for key in sorted(init):
    da = a[key].astype(np.float64) - init[key]
    db = b[key].astype(np.float64) - init[key]
    worst = max(worst, np.linalg.norm(da - db) / max(np.linalg.norm(db), 1e-30))
ok = set(a) == set(b) == set(init) and worst <= 1e-4
print("%d tensors, worst relative difference of the updates %.2e" % (len(init), worst))
print("updates agree: %s" % ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
