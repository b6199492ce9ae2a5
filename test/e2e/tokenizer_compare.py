#!/usr/bin/env python3
"""Compares the runtime tokenizer (through test/e2e/tokenizer_cli) with Hugging Face
`tokenizers` on a deterministic, seeded corpus of varied texts.

The corpus mixes English prose, many scripts (CJK, Japanese, Korean, Arabic, Hebrew,
Hindi, Thai, Cyrillic, Greek, ...), emoji with ZWJ sequences, skin tones and flags,
digits and long numbers, whitespace runs (spaces, tabs, CR, LF, NBSP, Unicode spaces,
trailing), contractions in mixed case, punctuation runs, code, embedded special tokens,
multi-line texts, random code points from all planes and random strings over a pool of
characters chosen to hit every branch of the pre-tokenizer regex. Each text is encoded
separately; texts go to the CLI NUL-separated (tokenizer_cli -0), so they may contain
newlines. The script also checks decode(encode(x)) == x in the CLI, and compares
decode of random id sequences (which include partial UTF-8 byte tokens) with
`tokenizers`' decode.

Usage: tokenizer_compare.py TOKENIZER_JSON[.gz] --cli PATH/tokenizer_cli
           [--texts N] [--seed S] [--bench-mb M]
Exits non-zero on any mismatch.
"""

import argparse
import gzip
import os
import random
import shutil
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

WORDS = (
    "the of and to in is was for that with as on by at from his her they their it "
    "this which be are have has had not but or an were been one all would there what "
    "so up out if about who get when make can like time no just him know take people "
    "into year your good some could them see other than then now look only come its "
    "over think also back after use two how our work first well way even new want "
    "because any these give day most us tokenizer compiler ternary weights quantized "
    "inference latency throughput kernel matrix vector attention transformer layer "
    "embedding Alice Bob London Paris NASA GPU iPhone McDonald O'Neil naïve café résumé "
    "coöperate façade jalapeño Zürich São Paulo"
).split()

SCRIPTS = [
    "你好，世界！今天天气很好。我们一起去公园散步吧。机器学习和深度学习",
    "東京都は日本の首都です。ひらがなとカタカナ、漢字を混ぜて書きます。ｶﾀｶﾅ",
    "안녕하세요, 세계! 한국어 문장을 토큰화합니다. 서울특별시",
    "مرحبا بالعالم! هذه جملة باللغة العربية. ١٢٣٤٥ ٦٧٨٩٠",
    "שלום עולם! זה משפט בעברית.",
    "नमस्ते दुनिया! यह हिंदी में एक वाक्य है। १२३४ क्षत्रिय",
    "স্বাগতম বাংলা ভাষায়। তামিল: வணக்கம் உலகம்",
    "สวัสดีชาวโลก นี่คือประโยคภาษาไทย ๑๒๓",
    "Привет, мир! Это предложение на русском языке. Ёжик в тумане.",
    "Γειά σου Κόσμε! Αυτή είναι μια ελληνική πρόταση. ΣΊΣΥΦΟΣ",
    "Բարեւ աշխարհ. გამარჯობა მსოფლიო. ሰላም ልዑል",
    "Tiếng Việt có dấu: Đường phố Hà Nội. Türkçe: İstanbul ığdır",
    "Ελληνικά ﬁ ﬂ ﬀ ﬃ ﬅ Æsir Œuvre ß ẞ ſ ǅ ǈ ǋ",
    "ㄅㄆㄇ ꓐꓑ ᚠᚢᚦ 𐌰𐌱𐌲 𝔄𝔅ℭ 𝟘𝟙𝟚 ℵℶ",
]

EMOJI = [
    "😀", "😂", "🤖", "🚀", "❤️", "👍", "👍🏻", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈",
    "🇺🇸", "🇯🇵", "🇪🇺", "#️⃣", "1️⃣", "🧑🏿‍🤝‍🧑🏻", "🫠", "🪿", "☺︎", "✌🏼", "🤷‍♀️", "💁🏾‍♂️",
]

SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|reserved_special_token_3|>", "<|finetune_right_pad_id|>",
    "<|python_tag|>", "<|eom_id|>",
]
NEAR_SPECIALS = ["<|eot_id", "<|begin_of_text|", "|>", "<|", "<|eot_id|>>", "<<|eot_id|>"]

SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", " \t ",
          "\u00a0", "\u3000", "\u2002", "\u2009", "\u200a", "\u2028", "\u2029", "\u0085",
          "\u000b", "\u000c", "\u1680", "\u202f", "\u205f", "\u200b", "\ufeff", "\u180e"]

CONTRACTIONS = ["I'm", "I'M", "you're", "YOU'RE", "they'Re", "we'VE", "he'll", "SHE'LL",
                "it's", "IT'S", "don't", "DON'T", "can't", "I'd", "I'D", "'s", "'S", "'t",
                "'re", "'ll", "'Ll", "'lL", "'ve", "'m", "'d", "it'ſ", "'ſ", "''s", "'sa",
                "rock'n'roll", "’s", "y'all", "'", "' s", "'\u0301s"]

PUNCT = ["...", "!!!", "?!", "--", "—", "–", "…", "«»", "“”", "‘’", "()", "[]", "{}",
         "<>", "!=", "==", "=>", "->", "::", ";;", "@#$%^&*", "~`|\\", "¿¡", "§¶", "©®™",
         "+-*/", "±×÷", "€£¥₹", "°C", "→←↑↓", "∀∃∈∑∫", "★☆", "♠♥", "、。「」", "．，！？"]

CODE = [
    "def foo(x, y=2):\n    return x ** y  # power\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}",
    '{"name": "tlc", "version": "0.1.0", "deps": [1, 2, 3], "ok": true}',
    "<div class=\"main\"><p>Hello &amp; welcome</p></div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "https://example.com/path/to/page?query=1&lang=en#section-2",
    "git commit -m 'fix: handle \\r\\n line endings' && make -j8",
    "x = [i**2 for i in range(10) if i % 2 == 0]\r\nprint(x)\r\n",
    "   indented line\n\t\ttabbed line\n    \n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "$ echo $HOME && ls -la /usr/local/bin | grep -v '^d'",
    "| col1 | col2 |\n|------|------|\n| 1    | 2    |",
    "**bold** _italic_ `code` ~~strike~~ > quote\n- item\n1. item",
]

# Characters chosen to exercise each regex branch and class boundary.
POOL = list("aZzQé中ßſİ1234567890٣५０²½Ⅻ'sStTmMdDrRlLvVeE!.,;?-_()<>|/\\\"#$%&*+=@^`~") + [
    " ", " ", " ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\u0085", "\u000b",
    "\u000c", "\u2003", "\u0301", "\u200d", "\ufe0f", "😀", "👍🏽", "🇺🇸", "\u200b", "ـ",
    "ﷺ", "ก", "ั", "ा", "क", "한", "ㄱ", "ﾟ", "𝔄", "𝟘", "𐌰", "\ue000", "\U000f0000",
    "\u0378", "\ufffd", "\uffff", "<|eot_id|>", "<|begin_of_text|>", "<|",
]


def prose(rng, n_words):
    out = []
    for i in range(n_words):
        w = rng.choice(WORDS)
        r = rng.random()
        if r < 0.08:
            w = w.capitalize()
        elif r < 0.1:
            w = w.upper()
        out.append(w)
        if rng.random() < 0.1:
            out[-1] += rng.choice([",", ".", ";", ":", "!", "?", "'s", "'S", "—"])
    text = " ".join(out)
    return text[0].upper() + text[1:] + rng.choice([".", "!", "?", "", "...", " "])


def number(rng):
    kind = rng.randrange(8)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 30)))
    if kind == 1:
        return "%.*f" % (rng.randrange(1, 8), rng.uniform(-1e6, 1e6))
    if kind == 2:
        return "{:,}".format(rng.randrange(10 ** 12))
    if kind == 3:
        return "%d-%02d-%02d %02d:%02d" % (rng.randrange(1900, 2100), rng.randrange(1, 13),
                                          rng.randrange(1, 29), rng.randrange(24),
                                          rng.randrange(60))
    if kind == 4:
        return "+1 (%03d) %03d-%04d" % (rng.randrange(1000), rng.randrange(1000),
                                       rng.randrange(10000))
    if kind == 5:
        return "".join(rng.choice("٠١٢٣٤٥٦٧٨٩०१२३४५६७८९０１２３４５６７８９") for _ in range(rng.randrange(1, 9)))
    if kind == 6:
        return "0x%x" % rng.randrange(1 << 64)
    return "%de%d" % (rng.randrange(1000), rng.randrange(-30, 30))


def random_code_point(rng):
    while True:
        plane = rng.random()
        if plane < 0.6:
            c = rng.randrange(0x80, 0x10000)
        elif plane < 0.9:
            c = rng.randrange(0x10000, 0x30000)
        else:
            c = rng.randrange(0x30000, 0x110000)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def random_piece(rng):
    kind = rng.randrange(12)
    if kind == 0:
        return prose(rng, rng.randrange(1, 12))
    if kind == 1:
        s = rng.choice(SCRIPTS)
        a = rng.randrange(len(s))
        return s[a : a + rng.randrange(1, 40)]
    if kind == 2:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randrange(1, 5)))
    if kind == 3:
        return number(rng)
    if kind == 4:
        return rng.choice(SPACES) * rng.randrange(1, 4)
    if kind == 5:
        return rng.choice(CONTRACTIONS)
    if kind == 6:
        return rng.choice(PUNCT) * rng.randrange(1, 3)
    if kind == 7:
        return rng.choice(CODE)
    if kind == 8:
        return rng.choice(SPECIALS + NEAR_SPECIALS)
    if kind == 9:
        return "".join(random_code_point(rng) for _ in range(rng.randrange(1, 6)))
    if kind == 10:
        return "".join(rng.choice(POOL) for _ in range(rng.randrange(1, 12)))
    return rng.choice(WORDS)


def make_corpus(rng, n):
    texts = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            text = prose(rng, rng.randrange(3, 60))
        elif kind in (1, 2):
            text = "".join(random_piece(rng) for _ in range(rng.randrange(1, 8)))
        elif kind == 3:
            sep = rng.choice([" ", "", "\n", "  ", "\t"])
            text = sep.join(random_piece(rng) for _ in range(rng.randrange(2, 10)))
        elif kind == 4:
            # Random strings over the pool: dense regex corner cases.
            text = "".join(rng.choice(POOL) for _ in range(rng.randrange(1, 40)))
        elif kind == 5:
            # Multi-line texts with assorted line endings and indentation.
            eol = rng.choice(["\n", "\r\n", "\r", "\n\n", " \n", "\n\t"])
            text = eol.join(random_piece(rng) for _ in range(rng.randrange(2, 8)))
        elif kind == 6:
            # Leading/trailing whitespace around content.
            text = (rng.choice(SPACES) * rng.randrange(0, 3) + random_piece(rng) +
                    rng.choice(SPACES) * rng.randrange(1, 4))
        elif kind == 7:
            text = "".join(random_code_point(rng) for _ in range(rng.randrange(1, 30)))
        elif kind == 8:
            # Chat-template-like texts with embedded special tokens.
            text = "".join(
                "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>"
                % (rng.choice(["system", "user", "assistant"]), random_piece(rng))
                for _ in range(rng.randrange(1, 4)))
            if rng.random() < 0.5:
                text = "<|begin_of_text|>" + text
        else:
            # Long runs: stress BPE on long words.
            unit = rng.choice(["a", "ab", "1", " ", "\n", "!", "é", "中", "😀", "ha", "xyz",
                               "'s", "\u00a0", "-=", "<|eot_id|>"])
            text = unit * rng.randrange(2, 300)
        texts.append(text.replace("\0", ""))
    return texts


def run_cli(cli, args, data):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
        path = f.name
    try:
        return subprocess.run([cli] + args + [path], capture_output=True)
    finally:
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizer", help="tokenizer.json, or .json.gz")
    ap.add_argument("--cli", required=True, help="path to the tokenizer_cli binary")
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--bench-mb", type=float, default=0,
                    help="also report encode speed on this many MB of prose")
    args = ap.parse_args()

    tmpdir = tempfile.mkdtemp(prefix="tokcmp")
    try:
        path = args.tokenizer
        if path.endswith(".gz"):
            plain = os.path.join(tmpdir, "tokenizer.json")
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            path = plain
        return compare(args, path)
    finally:
        shutil.rmtree(tmpdir)


def compare(args, path):
    ref = Tokenizer.from_file(path)
    rng = random.Random(args.seed)
    texts = make_corpus(rng, args.texts)
    failed = False

    # Encode.
    data = "\0".join(texts).encode("utf-8")
    res = run_cli(args.cli, ["-0", path], data)
    if res.returncode != 0:
        sys.exit("tokenizer_cli failed: " + res.stderr.decode(errors="replace"))
    got = res.stdout.decode().split("\n")[:-1]
    want = [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
    if len(got) != len(texts):
        sys.exit("tokenizer_cli printed %d lines for %d texts" % (len(got), len(texts)))
    mismatches = 0
    for text, g, w in zip(texts, got, want):
        g = [int(x) for x in g.split()]
        if g != w:
            mismatches += 1
            if mismatches <= 10:
                print("MISMATCH %r\n  tlc:        %s\n  tokenizers: %s" % (text, g, w))
    n_bytes = len(data) - len(texts) + 1
    print("encode: compared %d texts (%d bytes, %d tokens), %d mismatches"
          % (len(texts), n_bytes, sum(map(len, want)), mismatches))
    failed |= mismatches > 0

    # Round trip.
    res = run_cli(args.cli, ["-0", "--roundtrip", path], data)
    print(res.stdout.decode().strip(), res.stderr.decode().strip())
    failed |= res.returncode != 0

    # Decode of random id sequences, including ids that split UTF-8 sequences.
    space = ref.get_vocab_size(with_added_tokens=True)
    seqs = []
    for i in range(2000):
        if i % 2:
            ids = [rng.randrange(space) for _ in range(rng.randrange(1, 20))]
        else:
            ids = list(want[i])
            if ids:
                del ids[rng.randrange(len(ids))]  # May cut a character in half.
        seqs.append(ids)
    res = run_cli(args.cli, ["--decode", path],
                  "\n".join(" ".join(map(str, s)) for s in seqs).encode())
    got = [bytes.fromhex(h).decode() for h in res.stdout.decode().split("\n")[:-1]]
    if res.returncode != 0 or len(got) != len(seqs):
        sys.exit("tokenizer_cli --decode failed: " + res.stderr.decode(errors="replace"))
    dec_mismatches = sum(g != ref.decode(s, skip_special_tokens=False)
                         for g, s in zip(got, seqs))
    print("decode: compared %d id sequences, %d mismatches" % (len(seqs), dec_mismatches))
    failed |= dec_mismatches > 0

    if args.bench_mb > 0:
        bench(args, path, rng, texts)
    return 1 if failed else 0


def bench(args, path, rng, texts):
    target = int(args.bench_mb * 1e6)
    corpora = {
        "prose": lambda: prose(rng, 200),
        "mixed corpus": lambda: rng.choice(texts),
    }
    for name, gen in corpora.items():
        parts, size = [], 0
        while size < target:
            parts.append(gen())
            size += len(parts[-1].encode())
        res = run_cli(args.cli, ["-0", "--bench", path], "\0".join(parts).encode())
        print("%s: %s" % (name, res.stdout.decode().strip()))


if __name__ == "__main__":
    sys.exit(main())
