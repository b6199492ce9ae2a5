#!/usr/bin/env python3
"""Kills `tlc-run train` with SIGKILL at random moments, resumes it, and
checks that the adapter equals an uninterrupted run's, byte for byte.

Usage: train_resume.py --bin DIR --module TRAIN.tlm --data FILE [--kills N]
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def train(args, out, resume, extra=()):
    cmd = [os.path.join(args.bin, "tlc-run"), "train", args.module, "--data", args.data,
           "--steps", str(args.steps), "--lr", "0.01", "--out", out, "--save-every", "5",
           "--seed", "7", "--max-grad-norm", "1", "--weight-decay", "0.01",
           "--schedule", "cosine", "--warmup", "10", "--grad-accum", "2"]
    if resume:
        cmd.append("--resume")
    return subprocess.Popen(cmd + list(extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--kills", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(int(time.time()))
    with tempfile.TemporaryDirectory() as tmp:
        ref = os.path.join(tmp, "ref")
        t0 = time.time()
        p = train(args, ref, False)
        _, err = p.communicate()
        if p.returncode != 0:
            print("resume: FAIL (uninterrupted run failed: %s)" % err.decode().strip())
            sys.exit(1)
        duration = time.time() - t0
        out = os.path.join(tmp, "killed")
        kills, resumed, restarts = 0, False, 0
        while kills < args.kills:
            started = os.path.exists(os.path.join(out, "checkpoint.tlcstate"))
            p = train(args, out, started)
            resumed |= started
            time.sleep(rng.uniform(0.02, 0.5) * duration * (args.kills - kills) / args.kills)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                continue
            # The run ended before the kill: start over from nothing.
            p.wait()
            shutil.rmtree(out, ignore_errors=True)
            kills, restarts = 0, restarts + 1
            if restarts > 10:
                print("resume: FAIL (runs end before they can be killed)")
                sys.exit(1)
        p = train(args, out, os.path.exists(os.path.join(out, "checkpoint.tlcstate")))
        _, err = p.communicate()
        if p.returncode != 0:
            print("resume: FAIL (resumed run failed: %s)" % err.decode().strip())
            sys.exit(1)
        same = all(open(os.path.join(ref, f), "rb").read() == open(os.path.join(out, f), "rb").read()
                   for f in ("adapter_model.safetensors", "adapter_config.json", "checkpoint.tlcstate"))
        leftovers = [f for f in os.listdir(out) if ".tmp" in f]
        print("killed %d times (resumed from a checkpoint: %s); adapter identical: %s; temp files left: %d"
              % (kills, "yes" if resumed else "no", same, len(leftovers)))
        print("resume: %s" % ("PASS" if same and kills == args.kills and not leftovers else "FAIL"))
        sys.exit(0 if same and kills == args.kills and not leftovers else 1)


if __name__ == "__main__":
    main()
