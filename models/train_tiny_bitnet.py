#!/usr/bin/env python3
"""Train, export and verify tlc's small demo model: a ternary BitNet b1.58 model.

The model is Hugging Face's ``BitNetForCausalLM`` (transformers >= 4.52, tested with 5.17) whose
``*_proj`` linear layers are trained with quantization-aware training that reproduces the BitNet
b1.58 inference semantics exactly (see shared/notes/bitnet.md: per-token int8 absmax activation quantization
and per-tensor absmean ternary weights, both with straight-through estimators; the attention and
FFN sub-norms are those of BitNetForCausalLM itself).  The trained model is exported in the packed
offline format of microsoft/bitnet-b1.58-2B-4T (``linear_class: autobitlinear``): uint8 ``[out/4,
in]`` packed ternary weights plus a bf16 ``weight_scale`` = gamma per projection.

Corpus: the Python 3.11 documentation in texinfo form, as shipped by Debian's ``python3.11-doc``
package (``apt-get install python3-doc``), file ``/usr/share/info/python3.11.info.gz``; licensed
under the PSF License Agreement (code examples also 0BSD).  See models/README.md.

Steps (each a sub-command):

  prepare  (CPU)  clean the corpus, train the byte-level BPE tokenizer (Llama 3 pre-tokenizer),
                  tokenize, and write models/.data/{train,val}.npy (uint16 ids) plus
                  models/.data/tokenizer.json.
  train    (GPU)  train with QAT, export the packed HF folder to --out (and a copy of the
                  tokenizer + configs), print train/val losses.
  verify   (any)  load the exported folder with transformers' BitNetForCausalLM in float32,
                  compute held-out loss and greedy completions.

Typical use (see models/README.md):

  apt-get install -y python3-doc
  python3 models/train_tiny_bitnet.py prepare
  python3 models/train_tiny_bitnet.py train --out models/tiny-bitnet-docs       # on a GPU
  python3 models/train_tiny_bitnet.py verify --model models/tiny-bitnet-docs
"""

import argparse
import gzip
import json
import math
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, ".data")
INFO_PATH = "/usr/share/info/python3.11.info.gz"
DEB_PACKAGE = "python3.11-doc"

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
# Llama 3's pre-tokenizer regex, verbatim.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Model shape (the defaults are the shipped model's).
SHAPE = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)

# Top-level parts of the manual that are used (the rest is licences, indexes, legacy copies).
PARTS = [
    "What’s New in Python",  # without its Changelog node, which is a list of issue titles
    "The Python Tutorial",
    "Python Setup and Usage",
    "The Python Language Reference",
    "The Python Standard Library",
    "Extending and Embedding the Python Interpreter",
    "Python/C API Reference Manual",
    "Distributing Python Modules",
    "Installing Python Modules",
    "Python HOWTOs",
    "Python Frequently Asked Questions",
    "Glossary",
]


# --------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------

NODE_RE = re.compile(r"^File: python3\.11\.info,  Node: ([^,]+),(.*)$")
NOTE_RE = re.compile(r"\*[Nn]ote\s+([^:]*?)\s*:\s*[0-9a-f]+(?:\.|(?=,))", re.S)  # *note text: 1a0.
NOTE2_RE = re.compile(r"\*[Nn]ote\s+([^:]*?)::", re.S)  # *note Node::
FOOTREF_RE = re.compile(r"(?<=\S)\(\d+\)")  # word(1) footnote markers
UNDERLINE_RE = re.compile(r"^\s*([*=\-.])\1{3,}\s*$")
HEADNUM_RE = re.compile(r"^(\d+(\.\d+)*|[A-Z](\.\d+)*)\s+(?=\S)")


def _is_prose(lines):
    """A block of raw lines that info's filler wrapped (so it can be unwrapped into one line)."""
    first = lines[0].lstrip()
    if first.startswith((">>>", "... ", "$ ", "# ", "%")):
        return False
    if len(lines) == 1:
        return True
    ind = len(lines[0]) - len(first)
    cont = ind + 2 if first.startswith(("* ", "- ")) else ind  # list items hang by 2
    for l in lines[1:]:
        if len(l) - len(l.lstrip()) != cont:
            return False
        if l.lstrip().startswith((">>>", "... ", "* ", "- ", "-- ")):
            return False
    return all(len(l) >= 50 for l in lines[:-1])


def _fix_inline(text):
    text = NOTE_RE.sub(lambda m: m.group(1), text)
    text = NOTE2_RE.sub(lambda m: m.group(1), text)
    text = FOOTREF_RE.sub("", text)
    text = text.replace("\u2018", "'").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"\x00\x08\[image[^\x00]*\x00\x08\]\n*", "", text)  # image markers
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text).replace("\xa0", " ")


def clean_node(title, body):
    """Cleaned text of one info node: wrapped paragraphs joined into single lines, code blocks
    kept (indented by 4), menus, footnotes, tables and heading underlines dropped."""
    lines = []
    for l in body:
        if l.strip() == "---------- Footnotes ----------":
            break
        lines.append(l.rstrip())
    out_blocks = []
    block = []
    in_menu = False

    def flush():
        nonlocal block
        if not block:
            return
        if _is_prose(block):
            ind = len(block[0]) - len(block[0].lstrip())
            out_blocks.append((" " * min(ind, 0)) + " ".join(l.strip() for l in block))
        else:
            ind = min(len(l) - len(l.lstrip()) for l in block)
            pre = "    " if ind >= 5 else ""
            out_blocks.append("\n".join(pre + l[ind:] for l in block))
        block = []

    for l in lines:
        if l.strip() == "* Menu:":
            flush()
            in_menu = True
            continue
        if in_menu:
            if l.startswith("* ") or not l.strip() or l.startswith("   "):
                continue
            in_menu = False
        if UNDERLINE_RE.match(l):
            # the block so far is a section heading: strip its number
            if len(block) == 1:
                block[0] = HEADNUM_RE.sub("", block[0].strip())
            flush()
            continue
        if not l.strip():
            flush()
            continue
        if set(l.strip()) <= set("-+=|_ "):  # table rules
            continue
        block.append(l)
    flush()
    keep = []
    for b in out_blocks:
        if not b.strip():
            continue
        # drop tables (several runs of 3+ spaces between cells), but not code
        inner = sum(len(re.findall(r"\S {3,}\S", l)) for l in b.split("\n"))
        if inner > 2 and not b.startswith("    "):
            continue
        keep.append(b)
    return _fix_inline("\n\n".join(keep))


def load_corpus(path=INFO_PATH):
    """The cleaned corpus: a list of documents (one per info node) in manual order."""
    if not os.path.exists(path):
        sys.exit(
            f"{path} not found: install Debian's python3-doc (apt-get install -y python3-doc), "
            f"which provides {DEB_PACKAGE}"
        )
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        raw = f.read()
    lines = raw.split("\n")
    docs = []
    part = None
    in_changelog = False
    cur_title, cur_body = None, []

    def emit():
        if cur_title is not None and part in PARTS and not in_changelog:
            t = clean_node(cur_title, cur_body)
            if len(t) > 40:
                docs.append(t)

    for l in lines:
        if l.startswith("\x1f"):
            continue
        m = NODE_RE.match(l)
        if m:
            emit()
            cur_title, cur_body = m.group(1), []
            rest = m.group(2)
            if "Up: Top" in rest and "Up: Top-level" not in rest:
                part = cur_title
                in_changelog = False
            if cur_title == "Changelog":
                in_changelog = True
            continue
        if l.startswith("Tag Table:") or l.startswith("End Tag Table"):
            break
        if cur_title is not None:
            cur_body.append(l)
    emit()
    return docs


def split_docs(docs):
    """Deterministic train/val split: every 50th document is held out."""
    train = [d for i, d in enumerate(docs) if i % 50 != 17]
    val = [d for i, d in enumerate(docs) if i % 50 == 17]
    return train, val


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------


def train_tokenizer(texts, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Like Llama 3: the post-processor prepends <|begin_of_text|>.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
    )
    return tok


def cmd_prepare(args):
    import numpy as np

    t0 = time.time()
    docs = load_corpus()
    train_docs, val_docs = split_docs(docs)
    n_chars = sum(len(d) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_chars/1e6:.2f} M characters "
          f"({len(train_docs)} train / {len(val_docs)} val documents)")
    os.makedirs(DATA, exist_ok=True)
    with open(os.path.join(DATA, "corpus_train.txt"), "w") as f:
        f.write("\n\n\n".join(train_docs))
    with open(os.path.join(DATA, "corpus_val.txt"), "w") as f:
        f.write("\n\n\n".join(val_docs))
    tok = train_tokenizer(train_docs, args.vocab_size)
    assert tok.get_vocab_size() == args.vocab_size, tok.get_vocab_size()
    tok.save(os.path.join(DATA, "tokenizer.json"))
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    for name, ds in (("train", train_docs), ("val", val_docs)):
        # each document: <|begin_of_text|> (added by the post-processor) text <|end_of_text|>
        encs = tok.encode_batch(ds)
        ids = np.concatenate([np.asarray(e.ids + [eos], dtype=np.uint16) for e in encs])
        assert ids[0] == bos and ids[-1] == eos
        np.save(os.path.join(DATA, f"{name}.npy"), ids)
        print(f"{name}: {len(ids)} tokens ({sum(len(d) for d in ds)/len(ids):.2f} chars/token)")
    print(f"prepare took {time.time()-t0:.0f} s; wrote {DATA}")


# --------------------------------------------------------------------------------------------
# model + quantization-aware training
# --------------------------------------------------------------------------------------------


def make_config(shape, bos_id, eos_id, quantization_config=None):
    from transformers import BitNetConfig

    cfg = BitNetConfig(
        vocab_size=shape["vocab_size"],
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        hidden_act="relu2",
        max_position_embeddings=shape["max_position_embeddings"],
        rms_norm_eps=shape["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]},
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        initializer_range=0.02,
        use_cache=True,
    )
    if quantization_config is not None:
        cfg.quantization_config = quantization_config
    return cfg


def build_qat_model(cfg):
    """BitNetForCausalLM with every *_proj nn.Linear replaced by a QAT BitLinear."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from transformers import BitNetForCausalLM

    class QATBitLinear(nn.Linear):
        """Forward = BitNet b1.58 inference exactly (with gamma rounded to bf16 as exported):
        y = (round_int8(x * s) . W_t^T) * bf16(gamma) / s; backward = straight-through (identity
        through both quantizers), as transformers' AutoBitLinear in online mode."""

        def forward(self, x):
            w = self.weight
            gamma = w.detach().float().abs().mean().clamp(min=1e-5)
            w_t = (w.float() / gamma).round().clamp(-1, 1)
            w_q = w_t * gamma.to(torch.bfloat16).float()
            w_ste = w + (w_q.to(w.dtype) - w).detach()
            xf = x.float()
            s = 127.0 / xf.detach().abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
            x_q = (xf * s).round().clamp(-128, 127) / s
            x_ste = x + (x_q.to(x.dtype) - x).detach()
            return F.linear(x_ste, w_ste)

    model = BitNetForCausalLM(cfg)
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.Linear) and cname.endswith("_proj"):
                q = QATBitLinear(child.in_features, child.out_features, bias=False)
                q.weight = child.weight
                setattr(mod, cname, q)
    model.tie_weights()
    return model


def pack_ternary(w_t):
    """HF pack_weights: packed[r] bits 2i..2i+1 = code (w+1) of row i*(out/4)+r."""
    import torch

    out = w_t.shape[0]
    assert out % 4 == 0
    r = out // 4
    codes = (w_t + 1).to(torch.uint8)
    packed = torch.zeros((r, w_t.shape[1]), dtype=torch.uint8)
    for i in range(4):
        packed |= codes[i * r:(i + 1) * r] << (2 * i)
    return packed


def export(model, cfg_shape, tok_path, out_dir, bos_id, eos_id, extra_readme=None):
    """Write the packed offline HF folder (2B-4T format)."""
    import shutil

    import torch
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    sd = {}
    n_ternary = 0
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        p = p.detach().float().cpu()
        if name.endswith("_proj.weight"):
            gamma = p.abs().mean().clamp(min=1e-5)
            w_t = (p / gamma).round().clamp(-1, 1)
            sd[name] = pack_ternary(w_t.to(torch.int8))
            sd[name[: -len("weight")] + "weight_scale"] = gamma.reshape(1).to(torch.bfloat16)
            n_ternary += p.numel()
        else:
            sd[name] = p.to(torch.bfloat16).contiguous()
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    qc = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
    cfg = make_config(cfg_shape, bos_id, eos_id)
    cfg.architectures = ["BitNetForCausalLM"]
    cfg.dtype = "bfloat16"
    d = cfg.to_dict()
    for k in ("_name_or_path", "id2label", "label2id", "chunk_size_feed_forward", "problem_type",
              "output_attentions", "output_hidden_states", "return_dict", "is_encoder_decoder"):
        d.pop(k, None)
    d["quantization_config"] = qc
    d["architectures"] = ["BitNetForCausalLM"]
    d["rope_theta"] = cfg_shape["rope_theta"]  # also at top level, as transformers 4.x writes it
    d["head_dim"] = cfg_shape["hidden_size"] // cfg_shape["num_attention_heads"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(d, f, indent=2, sort_keys=True)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos_id, "eos_token_id": eos_id, "do_sample": False}, f, indent=2)
    shutil.copy(tok_path, os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
                   "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
                   "model_max_length": cfg_shape["max_position_embeddings"],
                   "model_input_names": ["input_ids", "attention_mask"]}, f, indent=2)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": BOS, "eos_token": EOS}, f, indent=2)
    return n_ternary


def cosine_lr(progress, peak, warmup, floor=0.05):
    """Linear warm-up over the first `warmup` fraction, then cosine decay to floor*peak."""
    if progress < warmup:
        return peak * max(progress, 1e-3) / warmup
    t = (progress - warmup) / (1 - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def batches(ids, batch, ctx, gen):
    """Random contiguous windows of ctx+1 tokens."""
    import torch

    n = len(ids) - ctx - 1
    starts = torch.randint(0, n, (batch,), generator=gen)
    idx = starts[:, None] + torch.arange(ctx + 1)[None, :]
    return ids[idx.to(ids.device)]


def eval_loss(model, ids, ctx, device, max_windows=None, batch=64, autocast=True):
    """Mean next-token loss over consecutive non-overlapping ctx-token windows."""
    import torch
    import torch.nn.functional as F

    n = (len(ids) - 1) // ctx
    if max_windows:
        n = min(n, max_windows)
    tot, cnt = 0.0, 0
    model.eval()
    with torch.no_grad():
        for b0 in range(0, n, batch):
            bs = min(batch, n - b0)
            idx = (torch.arange(bs)[:, None] + b0) * ctx + torch.arange(ctx + 1)[None, :]
            x = ids[idx].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast and device == "cuda"):
                logits = model(input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                   reduction="sum")
            tot += loss.item()
            cnt += x[:, 1:].numel()
    model.train()
    return tot / cnt


def cmd_train(args):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    tok = Tokenizer.from_file(os.path.join(args.data, "tokenizer.json"))
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    shape = dict(SHAPE)
    shape["vocab_size"] = tok.get_vocab_size()
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    train_ids = torch.from_numpy(np.load(os.path.join(args.data, "train.npy")).astype(np.int64))
    val_ids = torch.from_numpy(np.load(os.path.join(args.data, "val.npy")).astype(np.int64))
    print(f"train tokens {len(train_ids)}, val tokens {len(val_ids)}, device {device}", flush=True)
    cfg = make_config(shape, bos_id, eos_id)
    cfg._attn_implementation = "sdpa"
    model = build_qat_model(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_tern = sum(m.weight.numel() for n, m in model.named_modules() if n.endswith("_proj"))
    print(f"params {n_params} ({n_tern} ternary, {n_params - n_tern} embedding+norm)", flush=True)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if n.endswith("_proj.weight") else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=(device == "cuda"))
    fwd = model
    if args.compile and device == "cuda":
        fwd = torch.compile(model)

    def step_loss(x):
        nonlocal fwd
        with torch.autocast(device, dtype=torch.bfloat16, enabled=(device == "cuda")):
            try:
                logits = fwd(input_ids=x[:, :-1]).logits
            except Exception as e:  # torch.compile trouble: train eagerly instead
                if fwd is model:
                    raise
                print(f"torch.compile failed ({type(e).__name__}: {e}); training eagerly", flush=True)
                fwd = model
                logits = fwd(input_ids=x[:, :-1]).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))

    gen = torch.Generator().manual_seed(args.seed)
    train_ids_dev = train_ids.to(device)
    t0 = time.time()
    best = (float("inf"), -1)
    best_state = None
    log = []
    step = 0
    # Progress runs from 0 to 1 by steps or by wall time (--time-budget), whichever is further,
    # so the cosine schedule always completes inside the budget.
    progress = 0.0
    while progress < 1.0:
        lr = cosine_lr(progress, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x = batches(train_ids_dev, args.batch, args.ctx, gen)
        loss = step_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        el = time.time() - t0
        progress = step / args.steps
        if args.time_budget and step > 20:
            progress = max(progress, el / args.time_budget)
        if step % 100 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {el:.0f}s", flush=True)
        if step % args.eval_every == 0 or progress >= 1.0:
            vl = eval_loss(model, val_ids, args.ctx, device)
            tl = eval_loss(model, train_ids, args.ctx, device, max_windows=len(val_ids) // args.ctx)
            log.append({"step": step, "train_loss": tl, "val_loss": vl, "lr": lr,
                        "time_s": round(time.time() - t0, 1)})
            print(f"== step {step} train {tl:.4f} val {vl:.4f} ({time.time()-t0:.0f}s)", flush=True)
            if vl < best[0]:
                best = (vl, step)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_time = time.time() - t0
    print(f"trained {step} steps ({step * args.batch * args.ctx / len(train_ids):.1f} epochs) in "
          f"{train_time:.0f}s; best val {best[0]:.4f} at step {best[1]}", flush=True)
    if best_state is not None and best[1] != step:
        model.load_state_dict(best_state)
    model = model.float().eval()
    # final losses of the training (QAT) model in float32, no autocast
    vl32 = eval_loss(model, val_ids, args.ctx, device, autocast=False)
    tl32 = eval_loss(model, train_ids, args.ctx, device, max_windows=len(val_ids) // args.ctx,
                     autocast=False)
    print(f"final (fp32 QAT model): train {tl32:.4f} val {vl32:.4f}")
    n_tern = export(model.cpu(), shape, os.path.join(args.data, "tokenizer.json"), args.out, bos_id,
                    eos_id)
    summary = {"steps": step, "batch": args.batch, "ctx": args.ctx, "lr": args.lr,
               "tokens_seen": step * args.batch * args.ctx, "train_time_s": round(train_time, 1),
               "best_step": best[1], "final_train_loss_fp32": tl32, "final_val_loss_fp32": vl32,
               "params": n_params, "ternary_params": n_tern, "log": log,
               "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
               "torch": torch.__version__}
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}))


# --------------------------------------------------------------------------------------------
# verification with transformers' own BitNetForCausalLM
# --------------------------------------------------------------------------------------------

PROMPTS = [
    "The Python Tutorial",
    "A list is",
    "The with statement",
]


def numpy_forward(model_dir, ids):
    """Independent numpy float32 forward of the packed checkpoint, following bitnet.md
    (no transformers): returns logits [len(ids), vocab]."""
    import numpy as np

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    import torch  # only to read bf16 tensors
    from safetensors.torch import load_file as load_pt

    sd = {k: (v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy())
          for k, v in load_pt(os.path.join(model_dir, "model.safetensors")).items()}
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))

    def rms(v, w):
        return w * (v / np.sqrt((v * v).mean(-1, keepdims=True) + eps))

    def bitlinear(x, name):
        p = sd[name + ".weight"]
        R = p.shape[0]
        w = np.concatenate([((p >> (2 * i)) & 3).astype(np.int32) - 1 for i in range(4)], 0)
        s = 127.0 / np.maximum(np.abs(x).max(-1, keepdims=True), 1e-5)
        xq = np.clip(np.rint(x * s), -128, 127).astype(np.int32)
        y = xq @ w.T  # exact int32
        return (y.astype(np.float32) * sd[name + ".weight_scale"][0]) / s

    T = len(ids)
    x = sd["model.embed_tokens.weight"][ids].astype(np.float32)
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float32) / hd)
    ang = np.arange(T, dtype=np.float32)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1)); sin = np.sin(np.concatenate([ang, ang], -1))

    def rope(v):  # v [heads, T, hd]
        rot = np.concatenate([-v[..., hd // 2:], v[..., : hd // 2]], -1)
        return v * cos + rot * sin

    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        h = rms(x, sd[pre + "input_layernorm.weight"])
        q = bitlinear(h, pre + "self_attn.q_proj").reshape(T, nh, hd).transpose(1, 0, 2)
        k = bitlinear(h, pre + "self_attn.k_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        v = bitlinear(h, pre + "self_attn.v_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        rep = nh // nkv
        k, v = np.repeat(k, rep, 0), np.repeat(v, rep, 0)
        a = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        o = rms(o, sd[pre + "self_attn.attn_sub_norm.weight"])
        x = x + bitlinear(o, pre + "self_attn.o_proj")
        h = rms(x, sd[pre + "post_attention_layernorm.weight"])
        g = np.maximum(bitlinear(h, pre + "mlp.gate_proj"), 0) ** 2
        m = rms(g * bitlinear(h, pre + "mlp.up_proj"), sd[pre + "mlp.ffn_sub_norm.weight"])
        x = x + bitlinear(m, pre + "mlp.down_proj")
    x = rms(x, sd["model.norm.weight"])
    return x @ sd["model.embed_tokens.weight"].T


def cmd_verify(args):
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BitNetForCausalLM

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    model = BitNetForCausalLM.from_pretrained(args.model, dtype=torch.float32, device_map=device).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    print(type(model.model.layers[0].self_attn.q_proj).__name__,
          model.model.layers[0].self_attn.q_proj.weight.dtype,
          "online" if getattr(model.model.layers[0].self_attn.q_proj, "online_quant", None) else "offline")
    val_ids = torch.from_numpy(np.load(os.path.join(args.data, "val.npy")).astype(np.int64))
    vl = eval_loss(model, val_ids, args.ctx, device, max_windows=args.max_windows, batch=16,
                   autocast=False)
    print(f"transformers BitNetForCausalLM (float32, offline packed): val loss {vl:.4f} "
          f"(ppl {math.exp(vl):.2f})")
    ref = {"model": os.path.basename(os.path.normpath(args.model)), "val_loss": vl, "greedy": []}
    for p in args.prompts or PROMPTS:
        enc = tok(p, return_tensors="pt").to(device)
        out = model.generate(**enc, max_new_tokens=args.new_tokens, do_sample=False)
        new_ids = out[0][enc["input_ids"].shape[1]:].tolist()
        text = tok.decode(new_ids, skip_special_tokens=False)
        print(f"--- prompt {p!r} (ids {enc['input_ids'][0].tolist()})\n{p}{text}\n")
        ref["greedy"].append({"prompt": p, "input_ids": enc["input_ids"][0].tolist(),
                              "new_ids": new_ids, "completion": text})
    if args.numpy_check:
        ids = ref["greedy"][0]["input_ids"] + ref["greedy"][0]["new_ids"][:16]
        with torch.no_grad():
            lt = model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()
        ln = numpy_forward(args.model, np.asarray(ids))
        err = np.abs(lt - ln).max() / np.abs(lt).max()
        agree = (lt.argmax(-1) == ln.argmax(-1)).mean()
        print(f"numpy reference (bitnet.md) vs transformers: max rel logit diff {err:.2e}, "
              f"argmax agreement {agree:.3f} over {len(ids)} positions")
        ref["numpy_check"] = {"input_ids": ids, "max_rel_logit_diff": float(err),
                              "argmax_agreement": float(agree),
                              "last_logits_top5": [[int(i), float(lt[-1, i])]
                                                   for i in np.argsort(-lt[-1])[:5]]}
    if args.write_reference:
        with open(args.write_reference, "w") as f:
            json.dump(ref, f, indent=1)
            f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--vocab-size", type=int, default=SHAPE["vocab_size"])
    p = sub.add_parser("train")
    p.add_argument("--data", default=DATA)
    p.add_argument("--out", default=os.path.join(HERE, "tiny-bitnet-docs"))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.03, help="warm-up fraction of training")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--time-budget", type=float, default=0,
                   help="end training (schedule included) after this many seconds")
    p.add_argument("--layers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p = sub.add_parser("verify")
    p.add_argument("--model", default=os.path.join(HERE, "tiny-bitnet-docs"))
    p.add_argument("--data", default=DATA)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--max-windows", type=int, default=0)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--prompts", nargs="*")
    p.add_argument("--numpy-check", action="store_true",
                   help="also compare logits with an independent numpy implementation of bitnet.md")
    p.add_argument("--write-reference", default="",
                   help="write prompts, greedy ids/completions and the loss to this JSON file")
    args = ap.parse_args()
    {"prepare": cmd_prepare, "train": cmd_train, "verify": cmd_verify}[args.cmd](args)


if __name__ == "__main__":
    main()
