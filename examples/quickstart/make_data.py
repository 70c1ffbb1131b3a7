#!/usr/bin/env python3
"""Builds the quickstart's bundled files from Debian packages (run once; outputs are committed).

- tokenizer: byte-level BPE with the 256 GPT-2 byte symbols and no merges (vocab.json, merges.txt),
  plus <|endoftext|> = 256. Small enough for a ~3M-parameter model.
- pretrain.txt: fortunes from the `fortunes` package (/usr/share/games/fortunes, BSD licence), the
  corpus the bundled model was pretrained on by rankforge itself (see pretrain.sh).
- glosses.jsonl: the fine-tuning task, WordNet 3.0 noun glosses from `wordnet-base`
  (/usr/share/wordnet, WordNet licence: free use with the copyright notice, see README).
  {"prompt": "<lemma>:", "completion": " <gloss>"} pairs, loss on the completion only.
"""
import json, os, random, sys

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1] if len(sys.argv) > 1 else here

def bytes_to_unicode():  # GPT-2's reversible byte -> printable symbol map
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, map(chr, cs)))

tok_dir = os.path.join(out, "tokenizer")
os.makedirs(tok_dir, exist_ok=True)
vocab = {sym: b for b, sym in sorted(bytes_to_unicode().items())}
vocab["<|endoftext|>"] = 256
with open(os.path.join(tok_dir, "vocab.json"), "w") as f:
    json.dump(vocab, f, ensure_ascii=False)
with open(os.path.join(tok_dir, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")

fdir = "/usr/share/games/fortunes"
parts = []
for name in ["computers", "cookie", "definitions", "education", "fortunes", "humorists", "law", "literature",
             "love", "magic", "miscellaneous", "people", "pets", "platitudes", "riddles", "science", "songs-poems",
             "sports", "startrek", "wisdom", "work", "zippy", "linux", "goedel", "food", "kids", "linuxcookie"]:
    p = os.path.join(fdir, name)
    if os.path.exists(p):
        with open(p, encoding="utf-8", errors="replace") as f:
            parts.append(f.read().replace("\n%\n", "\n\n"))
with open(os.path.join(out, "pretrain.txt"), "w") as f:
    f.write("".join(parts))

rows = []
with open("/usr/share/wordnet/data.noun", encoding="latin-1") as f:
    for line in f:
        if line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        fields = head.split()
        lemma = fields[4].replace("_", " ")
        gloss = gloss.split(";")[0].strip()
        if 2 < len(lemma) < 20 and lemma.isalpha() and lemma.islower() and 10 < len(gloss) < 70:
            rows.append({"prompt": lemma + ":", "completion": " " + gloss})
random.Random(0).shuffle(rows)
rows = rows[:2400]
for name, part in (("glosses.jsonl", rows[:2000]), ("glosses_val.jsonl", rows[2000:])):
    with open(os.path.join(out, name), "w") as f:
        for r in part:
            f.write(json.dumps(r) + "\n")
print(f"tokenizer: {len(vocab)} tokens; pretrain.txt: {sum(map(len, parts))} chars; glosses: {len(rows)} pairs")
