#!/usr/bin/env python3
"""Compiles every golden checkpoint with tlc and compares with transformers.

For each case in test/e2e/goldens/: `tlc compile`, `tlc-run logits` on the
case's input ids (relative L2 error <= 1e-4 and the same argmax at every
position, via check_logits.py) and `tlc-run generate --ids` of 16 greedy
tokens (token-identical to transformers' generate). Exits 1 on any failure.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="folder with tlc and tlc-run")
    ap.add_argument("--goldens", default=os.path.join(HERE, "goldens"))
    ap.add_argument("--threads", default="2")
    ap.add_argument("--target", default="host", help="tlc compile --target")
    ap.add_argument("--modules", help="run the modules DIR/<case>.tlm instead of compiling "
                    "(a machine with tlc-run only)")
    ap.add_argument("--compile-to", help="only compile every case to DIR/<case>.tlm")
    ap.add_argument("--compile-flag", action="append", default=[], help="extra tlc compile flag")
    args = ap.parse_args()
    tlc = os.path.join(args.bin, "tlc")
    tlc_run = os.path.join(args.bin, "tlc-run")
    cases = sorted(d for d in os.listdir(args.goldens)
                   if os.path.isfile(os.path.join(args.goldens, d, "logits.npy")))
    assert len(cases) >= 4, "expected at least 4 golden cases, found %d" % len(cases)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            folder = os.path.join(args.goldens, case)
            module = os.path.join(args.modules or args.compile_to or tmp, case + ".tlm")
            try:
                if not args.modules:
                    run([tlc, "compile", folder, "-o", module, "--target", args.target] + args.compile_flag)
                if args.compile_to:
                    print("%s: compiled" % case)
                    continue
                ids = np.load(os.path.join(folder, "input_ids.npy")).astype(np.int64).tolist()
                out = os.path.join(tmp, case + ".npy")
                run([tlc_run, "logits", module, "--ids", ",".join(map(str, ids)), "-o", out,
                     "--threads", args.threads])
                check = subprocess.run([sys.executable, os.path.join(HERE, "check_logits.py"), out,
                                        os.path.join(folder, "logits.npy")],
                                       capture_output=True, text=True)
                print("%s: logits %s" % (case, check.stdout.strip()))
                if check.returncode != 0:
                    failures += 1
                gen = json.load(open(os.path.join(folder, "generate.json")))
                got = run([tlc_run, "generate", module, "--ids", ",".join(map(str, gen["prompt_ids"])),
                           "--max-new-tokens", str(len(gen["new_ids"])), "--threads", args.threads]).split()
                want = [str(i) for i in gen["new_ids"]]
                same = got == want
                print("%s: generate %d tokens %s" % (case, len(want), "identical" if same else
                                                     "DIFFER: got %s want %s" % (got, want)))
                failures += 0 if same else 1
            except RuntimeError as e:
                print("%s: FAILED: %s" % (case, e))
                failures += 1
    print("%d cases, %d failures" % (len(cases), failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
