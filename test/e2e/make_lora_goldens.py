#!/usr/bin/env python3
"""PEFT LoRA goldens on the golden BitNet checkpoints (for issue 3).

For each base case in test/e2e/goldens/ this writes OUT/<case>/:
  adapter/            a PEFT LoRA adapter (save_pretrained) with random non-zero
                      A and B, r=4, lora_alpha=8, all 7 projections
  input_ids.npy       int32 [T] (the base case's ids)
  logits.npy          float32 [T, vocab]: PeftModel logits (transformers + PEFT)
  train_ids.npy       int32 [B, S]: a batch, labels = input ids
  loss.json           {"loss": mean next-token cross entropy of that batch}
  grads.safetensors   d loss / d lora_A, lora_B, PEFT key names, float32
  meta.json           versions and settings (or why PEFT cannot wrap the case:
                      linear_class "bitlinear" is no nn.Linear subclass)
Computed in float32 on CPU, TF32 off, torch.compile off (transformers' eager
BitNet code). Usage, on the device machine:
    python3 test/e2e/make_lora_goldens.py --goldens test/e2e/goldens --out DIR
"""
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TORCHDYNAMO_DISABLE"] = "1"

import argparse
import json

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import BitNetForCausalLM

torch.set_float32_matmul_precision("highest")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    import peft
    from peft import LoraConfig, get_peft_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--goldens", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", nargs="*", default=["gqa-autobitlinear-tied", "mha-bitlinear-untied",
                                                    "gqa-online-master-headdim", "mha-noquant-bf16-sharded"])
    args = ap.parse_args()
    for i, case in enumerate(args.cases):
        src = os.path.join(args.goldens, case)
        out = os.path.join(args.out, case)
        os.makedirs(out, exist_ok=True)
        cfg = json.load(open(os.path.join(src, "config.json")))
        load_dir = src
        if "quantization_config" not in cfg:  # as make_goldens.py: ternarize online
            import shutil, tempfile
            load_dir = tempfile.mkdtemp()
            for f in os.listdir(src):
                shutil.copy(os.path.join(src, f), load_dir)
            cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                          "quantization_mode": "online"}
            json.dump(cfg, open(os.path.join(load_dir, "config.json"), "w"))
        model = BitNetForCausalLM.from_pretrained(load_dir, torch_dtype=torch.float32,
                                                  attn_implementation="eager")
        model.eval()
        lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0,
                          bias="none", task_type="CAUSAL_LM")
        try:
            pm = get_peft_model(model, lcfg)
        except ValueError as e:  # PEFT wraps nn.Linear subclasses only
            json.dump({"skipped": str(e), "peft": peft.__version__,
                       "linear_class": type(model.model.layers[0].self_attn.q_proj).__name__},
                      open(os.path.join(out, "meta.json"), "w"), indent=1)
            print(case, "skipped:", str(e)[:100])
            continue
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * (0.2 if "lora_A" in name else 0.1))
        pm.save_pretrained(os.path.join(out, "adapter"))
        ids = np.load(os.path.join(src, "input_ids.npy")).astype(np.int64)
        np.save(os.path.join(out, "input_ids.npy"), ids.astype(np.int32))
        with torch.no_grad():
            logits = pm(input_ids=torch.tensor(ids)[None]).logits[0].float().numpy()
        np.save(os.path.join(out, "logits.npy"), logits)
        rng = np.random.default_rng(200 + i)
        batch = rng.integers(0, cfg["vocab_size"], size=(2, 12)).astype(np.int64)
        np.save(os.path.join(out, "train_ids.npy"), batch.astype(np.int32))
        pm.train()
        pm.zero_grad()
        loss = pm(input_ids=torch.tensor(batch), labels=torch.tensor(batch)).loss
        loss.backward()
        grads = {}
        for name, p in pm.named_parameters():
            if "lora_" in name and p.grad is not None:
                key = name.replace(".default", "")
                grads[key] = p.grad.detach().float().contiguous()
        save_file(grads, os.path.join(out, "grads.safetensors"))
        json.dump({"loss": float(loss)}, open(os.path.join(out, "loss.json"), "w"))
        nonzero = {k: float(v.abs().max()) for k, v in grads.items()}
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "peft": peft.__version__, "lora": {"r": 4, "alpha": 8, "targets": TARGETS},
                   "grad_absmax": nonzero,
                   "linear_class": type(model.model.layers[0].self_attn.q_proj).__name__},
                  open(os.path.join(out, "meta.json"), "w"), indent=1)
        print(case, "loss", float(loss), "grads", len(grads),
              "zero grads", sum(v == 0 for v in nonzero.values()))


if __name__ == "__main__":
    main()
