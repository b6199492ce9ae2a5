#!/usr/bin/env python3
"""tlc's LoRA training against transformers + PEFT, same data, same start.

  prepare  (here)    tokenize the corpus into .npy sequences, write a PEFT
                     initial adapter (A Kaiming-uniform, B zero, as PEFT)
  peft     (device)  PEFT: the loss curve of the same run; and PEFT loads
                     tlc-written adapters (PeftModel.from_pretrained) and
                     compares its logits with tlc's
  plot     (here)    PNG of both curves and the largest relative gap

The tlc side, between prepare and peft (W = bench/.models/peft):
  tlc compile models/tiny-bitnet-docs --train --lora-rank 8 --lora-alpha 16 \
      --seq-len 128 --batch 4 -o W/train.tlm
  tlc-run train W/train.tlm --data W/data.npy --steps 200 --lr 1e-3 --seed 1 \
      --init-adapter W/init-adapter --out W/tlc-adapter-tiny --log W/tlc_log.jsonl
  (plus ids.npy, tlc_logits.npy from `tlc-run logits --adapter` and a
  check.json {"model": "tiny"} in W/tlc-adapter-tiny for the load check)

Both sides read the same [N, S] int32 sequences (labels = the next token,
none for the last position) in the same order (tools/tlc-run/train_order.py)
with AdamW (torch.optim.AdamW defaults but lr), constant learning rate,
float32 everywhere.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prepare(args):
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids = [cfg["bos_token_id"]] + tok.encode(open(args.corpus).read()).ids + [cfg["eos_token_id"]]
    n = len(ids) // args.seq_len
    data = np.array(ids[:n * args.seq_len], np.int32).reshape(n, args.seq_len)
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "data.npy"), data)
    # PEFT's init: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0.
    rng = np.random.default_rng(args.seed)
    D, I, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    shapes = {"q_proj": (cfg["num_attention_heads"] * hd, D), "k_proj": (cfg["num_key_value_heads"] * hd, D),
              "v_proj": (cfg["num_key_value_heads"] * hd, D), "o_proj": (D, cfg["num_attention_heads"] * hd),
              "gate_proj": (I, D), "up_proj": (I, D), "down_proj": (D, I)}
    tensors = {}
    for l in range(cfg["num_hidden_layers"]):
        for t in TARGETS:
            part = "self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = "base_model.model.model.layers.%d.%s.%s" % (l, part, t)
            out_f, in_f = shapes[t]
            b = 1.0 / np.sqrt(in_f)
            tensors[key + ".lora_A.weight"] = rng.uniform(-b, b, (args.rank, in_f)).astype(np.float32)
            tensors[key + ".lora_B.weight"] = np.zeros((out_f, args.rank), np.float32)
    init = os.path.join(args.out, "init-adapter")
    os.makedirs(init, exist_ok=True)
    save_file(tensors, os.path.join(init, "adapter_model.safetensors"), metadata={"format": "pt"})
    json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": args.rank, "lora_alpha": args.alpha,
               "target_modules": TARGETS, "lora_dropout": 0.0, "bias": "none",
               "base_model_name_or_path": os.path.basename(args.model.rstrip("/"))},
              open(os.path.join(init, "adapter_config.json"), "w"), indent=1)
    print("%d sequences of %d tokens, adapter r=%d alpha=%g -> %s" % (n, args.seq_len, args.rank, args.alpha, args.out))


def curve(args, torch, PeftModel, base, dev, data, train_order):
    model = PeftModel.from_pretrained(base(), os.path.join(args.work, "init-adapter"), is_trainable=True)
    model.train()
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, eps=1e-8, foreach=False)
    losses = []
    for step in range(args.steps):
        idx = train_order.batch_indices(step, args.batch, len(data), args.seed, True)
        batch = torch.tensor(data[idx], device=dev)
        opt.zero_grad()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def peft_run(args):
    os.environ["TORCHDYNAMO_DISABLE"] = "1"
    import torch
    import peft
    import transformers
    from peft import PeftModel
    from transformers import BitNetForCausalLM
    sys.path.insert(0, os.path.join(HERE, "..", "tools", "tlc-run"))
    import train_order
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
              "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"}

    def base(where=dev):
        return BitNetForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32,
                                                 attn_implementation="eager").to(where)

    # 1. The loss curve (skipped with --steps 0).
    data = np.load(os.path.join(args.work, "data.npy")).astype(np.int64)
    losses = []
    if args.steps:
        losses = curve(args, torch, PeftModel, base, dev, data, train_order)
        result["losses"] = losses
        result["settings"] = {"lr": args.lr, "batch": args.batch, "steps": args.steps, "seed": args.seed}

    # 2. PEFT loads tlc's adapters: logits against tlc's, in float32 on the
    # CPU as the goldens (GPU reductions flip int8 activation roundings).
    checks = []

    for name in sorted(os.listdir(args.work)):
        case = os.path.join(args.work, name)
        if not name.startswith("tlc-adapter") or not os.path.isdir(case):
            continue
        meta = json.load(open(os.path.join(case, "check.json")))
        m = PeftModel.from_pretrained(base("cpu") if meta["model"] == "tiny" else
                                      BitNetForCausalLM.from_pretrained(meta["model_dir"], torch_dtype=torch.float32,
                                                                        attn_implementation="eager"), case)
        m.eval()
        ids = torch.tensor(np.load(os.path.join(case, "ids.npy")).astype(np.int64)[None])
        with torch.no_grad():
            ref = m(input_ids=ids).logits[0].float().cpu().numpy()
        ours = np.load(os.path.join(case, "tlc_logits.npy"))
        checks.append({"adapter": name, "max_abs_diff": float(np.abs(ours - ref).max()),
                       "rel_l2": float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)),
                       "logit_absmax": float(np.abs(ref).max())})
    result["peft_loads_tlc_adapters"] = checks
    out = os.environ.get("OUT", args.work)
    json.dump(result, open(os.path.join(out, "peft_compare.json"), "w"), indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "losses"}, indent=1))
    if losses:
        print("loss first/last", losses[0], losses[-1])


def plot(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    peft_res = json.load(open(args.peft))
    ours = [json.loads(l)["loss"] for l in open(args.tlc_log)]
    theirs = peft_res["losses"]
    n = min(len(ours), len(theirs))
    gap = max(abs(a - b) / b for a, b in zip(ours[:n], theirs[:n]))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, n + 1), theirs[:n], label="transformers + PEFT (%s)" % peft_res["device"], lw=2)
    ax.plot(range(1, n + 1), ours[:n], label="tlc (this CPU)", lw=1, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("LoRA r=%s on tiny-bitnet-docs, license texts; max gap %.2f%%" % (args.rank, 100 * gap))
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print("steps %d, max relative gap %.3f%%, final loss tlc %.4f PEFT %.4f" % (n, 100 * gap, ours[n - 1], theirs[n - 1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["prepare", "peft", "plot"])
    ap.add_argument("--model", default=os.path.join(HERE, "..", "models", "tiny-bitnet-docs"))
    ap.add_argument("--corpus", default=os.path.join(HERE, "..", "demo", "licenses.txt"))
    ap.add_argument("--work", default=os.path.join(HERE, ".models", "peft"))
    ap.add_argument("--out", default=os.path.join(HERE, ".models", "peft"))
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--peft")
    ap.add_argument("--tlc-log")
    ap.add_argument("--png")
    args = ap.parse_args()
    {"prepare": prepare, "peft": peft_run, "plot": plot}[args.mode](args)


if __name__ == "__main__":
    main()
