#!/usr/bin/env python3
"""One training step of tlc against PEFT's gradients and loss.

For each case of test/e2e/lora-goldens/ that PEFT could wrap: compile the
base checkpoint with `tlc compile --train` (r=4, alpha=8, all 7 projections,
the golden batch's shape, SGD), run `tlc-run train` for one step with
--lr 1 from the golden adapter on the golden batch, so that the adapter
written is init - gradient. Checks every LoRA gradient against PEFT's
(relative L2 error <= 1e-3 per tensor) and the loss (|diff| <= 1e-5).
Exits 1 on any failure.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    return p.stdout


def check_case(case, args, tmp):
    gold = os.path.join(args.lora_goldens, case)
    batch = np.load(os.path.join(gold, "train_ids.npy"))
    if args.modules:
        module = os.path.join(args.modules, case + ".tlm")
    else:
        module = os.path.join(args.save_modules or tmp, case + ".tlm")
        run([os.path.join(args.bin, "tlc"), "compile", os.path.join(args.goldens, case), "--train",
             "-o", module, "--lora-rank", "4", "--lora-alpha", "8", "--seq-len", str(batch.shape[1]),
             "--batch", str(batch.shape[0]), "--optimizer", "sgd"] + args.compile_flag)
        if args.save_modules:
            print("%s: compiled %s" % (case, module))
            return 0
    out = os.path.join(tmp, case + "-adapter")
    log = os.path.join(tmp, case + ".jsonl")
    run([os.path.join(args.bin, "tlc-run"), "train", module, "--data", os.path.join(gold, "train_ids.npy"),
         "--steps", "1", "--lr", "1", "--init-adapter", os.path.join(gold, "adapter"), "--out", out,
         "--shuffle", "false", "--log", log, "--threads", args.threads])
    init = load_file(os.path.join(gold, "adapter", "adapter_model.safetensors"))
    trained = load_file(os.path.join(out, "adapter_model.safetensors"))
    ref = load_file(os.path.join(gold, "grads.safetensors"))
    worst, failures = 0.0, 0
    for key, g_ref in sorted(ref.items()):
        g = init[key].astype(np.float64) - trained[key].astype(np.float64)
        err = np.linalg.norm(g - g_ref) / max(np.linalg.norm(g_ref), 1e-30)
        worst = max(worst, err)
        if not err <= 1e-3:
            failures += 1
            print("%s: %s relative error %.3e FAIL" % (case, key, err))
    if set(trained) != set(ref):
        failures += 1
        print("%s: adapter keys differ from PEFT's" % case)
    loss = json.loads(open(log).readline())["loss"]
    loss_ref = json.load(open(os.path.join(gold, "loss.json")))["loss"]
    loss_ok = abs(loss - loss_ref) <= 1e-5
    failures += not loss_ok
    print("%s: %d gradients, worst relative error %.2e; loss %.7f vs PEFT %.7f %s" %
          (case, len(ref), worst, loss, loss_ref, "PASS" if failures == 0 else "FAIL"))
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--goldens", default=os.path.join(HERE, "goldens"))
    ap.add_argument("--lora-goldens", default=os.path.join(HERE, "lora-goldens"))
    ap.add_argument("--threads", default="2")
    ap.add_argument("--compile-flag", action="append", default=[], help="extra tlc compile flag")
    ap.add_argument("--save-modules", help="only compile each case's module into this folder")
    ap.add_argument("--modules", help="use the modules in this folder instead of compiling")
    args = ap.parse_args()
    if args.save_modules:
        os.makedirs(args.save_modules, exist_ok=True)
    cases = sorted(d for d in os.listdir(args.lora_goldens)
                   if os.path.isfile(os.path.join(args.lora_goldens, d, "grads.safetensors")))
    assert len(cases) >= 3, "expected 3 PEFT gradient cases, found %d" % len(cases)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            failures += check_case(case, args, tmp)
    if args.save_modules:
        return
    print("lora gradients: %s" % ("PASS" if failures == 0 else "FAIL"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
