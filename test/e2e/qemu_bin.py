#!/usr/bin/env python3
"""Makes a folder whose `tlc` is the host compiler and whose `tlc-run` runs
the cross-built aarch64 tlc-run under qemu-aarch64 with a given CPU model,
so that every end-to-end script runs unchanged against the aarch64 runtime.

Usage: qemu_bin.py --tlc HOST_BIN/tlc --tlc-run AARCH64_BIN/tlc-run --cpu max --out DIR
"""
import argparse
import os
import shutil
import stat
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tlc", required=True)
    ap.add_argument("--tlc-run", required=True)
    ap.add_argument("--cpu", required=True, help="qemu -cpu model (max, cortex-a53, ...)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not os.path.isfile(args.tlc_run):
        sys.exit("qemu_bin.py: %s is missing: run `make build-aarch64` first" % args.tlc_run)
    qemu = shutil.which("qemu-aarch64")
    if not qemu:
        sys.exit("qemu_bin.py: qemu-aarch64 is missing (Debian package qemu-user)")
    os.makedirs(args.out, exist_ok=True)
    tlc = os.path.join(args.out, "tlc")
    if os.path.lexists(tlc):
        os.remove(tlc)
    os.symlink(os.path.abspath(args.tlc), tlc)
    run = os.path.join(args.out, "tlc-run")
    with open(run, "w") as f:
        # exec: signals (the resume test's SIGKILL) reach qemu itself.
        f.write('#!/bin/sh\nexec %s -cpu %s -L /usr/aarch64-linux-gnu %s "$@"\n'
                % (qemu, args.cpu, os.path.abspath(args.tlc_run)))
    os.chmod(run, os.stat(run).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


if __name__ == "__main__":
    main()
