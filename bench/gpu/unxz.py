#!/usr/bin/env python3
"""unxz.py IN.xz OUT: decompresses with Python's lzma (the GPU machine may
lack the xz tool)."""
import lzma
import shutil
import sys

with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 24)
