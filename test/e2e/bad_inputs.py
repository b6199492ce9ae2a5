#!/usr/bin/env python3
"""Bad input never crashes tlc or tlc-run and never leaves output behind.

Each case breaks one thing in a copy of a valid model folder (or module
file) and checks: exit status 1, exactly one error line on stderr naming the
file that is wrong (and, where given, what is wrong), no output file and no
temporary file left next to it.
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = os.path.join(HERE, "goldens", "gqa-autobitlinear-tied")
SHARDED = os.path.join(HERE, "goldens", "mha-noquant-bf16-sharded")
LLAMA3 = os.path.join(HERE, "..", "data", "llama3-tokenizer", "tokenizer.json.gz")


def read_st(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_st(path, header, body, header_size=None):
    h = json.dumps(header).encode()
    n = len(h) if header_size is None else header_size
    open(path, "wb").write(struct.pack("<Q", n) + h + body)


class Checker:
    def __init__(self, bin_dir, tmp):
        self.bin = bin_dir
        self.tmp = tmp
        self.failures = 0
        self.count = 0

    def expect_error(self, name, cmd, must_mention, out=None):
        self.count += 1
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        problems = []
        if p.returncode != 1:
            problems.append("exit status %d (want 1)" % p.returncode)
        if len(lines) != 1:
            problems.append("%d stderr lines (want 1): %r" % (len(lines), lines[:4]))
        for word in must_mention:
            if word not in p.stderr:
                problems.append("message lacks %r: %r" % (word, p.stderr.strip()))
        if out:
            left = [f for f in os.listdir(os.path.dirname(out))
                    if f.startswith(os.path.basename(out))]
            if left:
                problems.append("left output behind: %s" % left)
        status = "ok" if not problems else "FAIL: " + "; ".join(problems)
        print("%-40s %s | %s" % (name, status, lines[0] if lines else ""))
        self.failures += bool(problems)

    def model_case(self, name, mutate, must_mention, src=GOOD):
        d = os.path.join(self.tmp, name)
        shutil.copytree(src, d)
        mutate(d)
        outdir = os.path.join(self.tmp, name + "-out")
        os.makedirs(outdir)
        out = os.path.join(outdir, "model.tlm")
        self.expect_error(name, [os.path.join(self.bin, "tlc"), "compile", d, "-o", out],
                          must_mention, out)


def edit_config(fn):
    def mutate(d):
        path = os.path.join(d, "config.json")
        cfg = json.load(open(path))
        fn(cfg)
        json.dump(cfg, open(path, "w"))
    return mutate


def edit_st(fn, file="model.safetensors"):
    def mutate(d):
        path = os.path.join(d, file)
        header, body = read_st(path)
        r = fn(header, body)
        if r is not None:
            header, body, size = r
            write_st(path, header, body, size)
        else:
            write_st(path, header, body)
    return mutate


def first_tensor(header, suffix):
    return next(k for k in sorted(header) if k.endswith(suffix))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tlc-bad-")
    c = Checker(args.bin, tmp)
    st = "model.safetensors"
    try:
        # config.json
        c.model_case("no-config", lambda d: os.remove(os.path.join(d, "config.json")),
                     ["config.json", "cannot open"])
        c.model_case("config-not-json", lambda d: open(os.path.join(d, "config.json"), "w").write("{oops"),
                     ["config.json", "JSON"])
        c.model_case("config-model-type", edit_config(lambda j: j.update(model_type="llama")),
                     ["config.json", "model_type"])
        c.model_case("config-no-hidden", edit_config(lambda j: j.pop("hidden_size")),
                     ["config.json", "hidden_size"])
        c.model_case("config-neg-layers", edit_config(lambda j: j.update(num_hidden_layers=-2)),
                     ["config.json", "num_hidden_layers"])
        c.model_case("config-string-vocab", edit_config(lambda j: j.update(vocab_size="512")),
                     ["config.json", "vocab_size"])
        c.model_case("config-gqa", edit_config(lambda j: j.update(num_key_value_heads=3)),
                     ["config.json", "num_key_value_heads"])
        c.model_case("config-act", edit_config(lambda j: j.update(hidden_act="silu")),
                     ["config.json", "hidden_act"])
        c.model_case("config-quant", edit_config(lambda j: j["quantization_config"].update(quant_method="gptq")),
                     ["config.json", "quant_method"])
        c.model_case("config-rope-scaling", edit_config(lambda j: j.update(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4})),
                     ["config.json", "rope_type"])
        # safetensors
        c.model_case("st-truncated-4", lambda d: open(os.path.join(d, st), "r+b").truncate(4),
                     [st, "truncated"])
        c.model_case("st-header-size-lies", edit_st(lambda h, b: (h, b, 1 << 40)),
                     [st, "header size"])
        c.model_case("st-header-not-json", lambda d: open(os.path.join(d, st), "r+b").write(struct.pack("<Q", 5) + b"nope!"),
                     [st, "JSON"])
        c.model_case("st-truncated-data", lambda d: open(os.path.join(d, st), "r+b").truncate(os.path.getsize(os.path.join(d, st)) - 100),
                     [st, "data_offsets"])
        def bad_offsets(h, b):
            k = first_tensor(h, "q_proj.weight")
            h[k]["data_offsets"] = [0, len(b) + 64]
        c.model_case("st-offset-outside", edit_st(bad_offsets), [st, "q_proj.weight", "data_offsets"])
        def size_mismatch(h, b):
            k = first_tensor(h, "input_layernorm.weight")
            h[k]["shape"] = [h[k]["shape"][0] * 2]
        c.model_case("st-shape-vs-offsets", edit_st(size_mismatch), [st, "input_layernorm.weight", "bytes"])
        def bad_dtype(h, b):
            k = first_tensor(h, "model.norm.weight")
            h[k]["dtype"] = "Q4"
        c.model_case("st-dtype", edit_st(bad_dtype), [st, "dtype"])
        def overlap(h, b):
            a = first_tensor(h, "layers.0.input_layernorm.weight")
            z = first_tensor(h, "layers.0.post_attention_layernorm.weight")
            h[z]["data_offsets"] = h[a]["data_offsets"]
        c.model_case("st-overlap", edit_st(overlap), [st, "overlap"])
        def missing(h, b):
            h.pop(first_tensor(h, "layers.1.mlp.down_proj.weight"))
        c.model_case("st-missing-tensor", edit_st(missing), ["layers.1.mlp.down_proj.weight", "missing"])
        def wrong_shape(h, b):
            k = first_tensor(h, "model.norm.weight")
            h[k]["shape"] = [h[k]["shape"][0] // 2, 2]
        c.model_case("st-wrong-shape", edit_st(wrong_shape), [st, "model.norm.weight", "shape"])
        def packed_as_f16(h, b):
            k = first_tensor(h, "layers.0.self_attn.q_proj.weight")
            n = h[k]["data_offsets"][1] - h[k]["data_offsets"][0]
            h[k]["dtype"] = "F16"
            h[k]["shape"] = [h[k]["shape"][0], h[k]["shape"][1] // 2]
        c.model_case("st-packed-dtype", edit_st(packed_as_f16), [st, "q_proj.weight"])
        c.model_case("no-safetensors", lambda d: os.remove(os.path.join(d, st)), [st, "cannot open"])
        c.model_case("index-missing-shard",
                     lambda d: os.remove(os.path.join(d, sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))[0])),
                     [".safetensors", "cannot open"], src=SHARDED)
        def lying_index(d):
            p = os.path.join(d, "model.safetensors.index.json")
            j = json.load(open(p))
            j["weight_map"]["model.extra.weight"] = sorted(set(j["weight_map"].values()))[0]
            json.dump(j, open(p, "w"))
        c.model_case("index-lies", lying_index, ["model.extra.weight", "missing"], src=SHARDED)
        # tokenizer.json
        c.model_case("tokenizer-not-json", lambda d: open(os.path.join(d, "tokenizer.json"), "w").write("[1,2"),
                     ["tokenizer.json"])
        c.model_case("tokenizer-wordpiece",
                     lambda d: json.dump({"model": {"type": "WordPiece", "vocab": {}}}, open(os.path.join(d, "tokenizer.json"), "w")),
                     ["tokenizer.json"])

        # Module files: break a valid module in several ways.
        good = os.path.join(tmp, "good.tlm")
        subprocess.run([os.path.join(args.bin, "tlc"), "compile", GOOD, "-o", good], check=True)
        data = open(good, "rb").read()
        run = os.path.join(args.bin, "tlc-run")

        def module_case(name, blob, must):
            path = os.path.join(tmp, name + ".tlm")
            open(path, "wb").write(blob)
            c.expect_error("module-" + name, [run, "info", path], [path] + must)

        module_case("empty", b"", ["empty"])
        module_case("truncated-header", data[:6], ["truncated"])
        module_case("truncated-half", data[: len(data) // 2], [])
        module_case("truncated-data", data[:-1000], ["outside"])
        module_case("identifier", data[:8] + b"XXXX" + data[12:], ["TLCM"])
        module_case("garbage", bytes(random.Random(1).getrandbits(8) for _ in range(4096)), [])
        fb_size = struct.unpack("<I", data[:4])[0]
        module_case("size-prefix-lies", struct.pack("<I", len(data) * 2) + data[4:], ["truncated"])
        # Random corruption of the header: must never crash (exit 0 or 1).
        rng = random.Random(7)
        crashes = 0
        for i in range(300):
            blob = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(4, fb_size + 4)
                blob[pos] = rng.getrandbits(8)
            path = os.path.join(tmp, "mut.tlm")
            open(path, "wb").write(bytes(blob))
            p = subprocess.run([run, "info", path], capture_output=True)
            if p.returncode not in (0, 1):
                crashes += 1
                shutil.copy(path, os.path.join(tmp, "crash-%d.tlm" % i))
        c.count += 1
        print("%-40s %s" % ("module-random-header-mutations", "ok (300 runs, no crash)" if not crashes else "FAIL: %d crashes" % crashes))
        c.failures += crashes > 0
    finally:
        if c.failures == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept inputs in", tmp)
    print("%d cases, %d failures" % (c.count, c.failures))
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
