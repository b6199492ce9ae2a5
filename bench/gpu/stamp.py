#!/usr/bin/env python3
"""Runs a command and prints each line of its output (lines end at \\n or
\\r: progress bars) with the seconds since start, so per-step times of a
peer that prints only a progress bar can be read off.

  stamp.py COMMAND [ARGS...]
"""
import subprocess
import sys
import time

start = time.monotonic()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
line = b""
while True:
    c = proc.stdout.read(1)
    if not c or c in b"\r\n":
        if line.strip():
            sys.stdout.write("[%9.3f] %s\n" % (time.monotonic() - start, line.decode(errors="replace")))
            sys.stdout.flush()
        line = b""
        if not c:
            break
    else:
        line += c
sys.exit(proc.wait())
