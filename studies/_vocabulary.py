"""The vocabulary study's measurement (python studies/_vocabulary.py FOLDER KIND VOCAB SOURCE): our KIND
trainer (subword.py: bpe, wordpiece or unigram) at VOCAB on SOURCE (books; or wiki: the Wikipedia sample
but its every 10th document), measured on held-out text: WikiText-2 test, the Wikipedia sample's every
10th document, GLUE sentences (SST-2 and MRPC dev). Per held-out set: tokens per word (fertility; words
are whitespace-separated), bytes per token, the unknown-token rate; over all of them: the share of the
vocabulary used, the fertility of frequent, rare and unseen words (by their count in the training text,
each word encoded as it follows a space) and how a few words split. Writes FOLDER/results.json and
FOLDER/tokenizer.json (the tokenizer)."""

import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's modules

import data  # noqa: E402
import subword  # noqa: E402
from hf_checkpoint import atomic_write  # noqa: E402

EXAMPLES = ["the", "transformer", "tokenization", "unbelievably", "Constantinople", "naïve", "COVID-19", "2,500"]
BANDS = {"frequent (>= 100)": (100, None), "rare (1-9)": (1, 9), "unseen (0)": (0, 0)}  # training-text counts


def texts(source):
    """-> (training documents, the held-out sets {name: [text]})."""
    wiki = list(data._lm_texts("wiki"))
    root = data.data_dir()
    glue = [s for task in ("sst2", "mrpc") for row in data.read_glue(task, "dev") for s in row["text"]]
    held = {
        "wikitext-2 test": [x for x in (root / "wikitext-2/wiki.test.tokens").read_text().splitlines() if x.strip()],
        "wiki held-out": wiki[9::10],
        "glue sentences": glue,
    }
    if source == "books":
        return list(data._lm_texts("books")), held
    if source == "wiki":
        return [d for k, d in enumerate(wiki) if k % 10 != 9], held
    raise ValueError(f"SOURCE must be books or wiki, got {source!r}")


def unk_ids(tok):
    if isinstance(tok, subword.WordPiece):
        return {tok.vocab[tok.unk]}
    if isinstance(tok, subword.Unigram):
        return {tok.unk_id}
    return set()  # byte-level BPE: every byte has a token


def as_after_a_space(tok, word):  # a word as it appears mid-text (GPT-2's pre-tokenizer keeps the space)
    return tok.encode(" " + word if isinstance(tok, subword.ByteBPE) else word)


def measure(tok, train_docs, held):
    unk, used, out = unk_ids(tok), set(), {"sets": {}}
    for name, lines in held.items():
        ids = [tok.encode(x) for x in lines]
        n = sum(map(len, ids))
        words, nbytes = sum(len(x.split()) for x in lines), sum(len(x.encode()) for x in lines)
        used.update(i for row in ids for i in row)
        unks = sum(1 for row in ids for i in row if i in unk)
        out["sets"][name] = {"tokens_per_word": n / words, "bytes_per_token": nbytes / n, "unk_rate": unks / n}
    size = len(tok.pieces) if isinstance(tok, subword.Unigram) else len(tok.vocab)
    out["vocab_size"], out["vocab_used"] = size, len(used) / size
    counts = collections.Counter(w for d in train_docs for w in d.split())
    held_words = collections.Counter(w for lines in held.values() for x in lines for w in x.split())
    out["bands"] = {}
    for band, (lo, hi) in BANDS.items():
        chosen = [w for w in held_words if counts[w] >= lo and (hi is None or counts[w] <= hi)]
        tokens = sum(held_words[w] * len(as_after_a_space(tok, w)) for w in chosen)
        n = sum(held_words[w] for w in chosen)
        out["bands"][band] = {"words": n, "types": len(chosen), "tokens_per_word": tokens / max(n, 1)}
    out["examples"] = {w: [tok.decode([i]) for i in as_after_a_space(tok, w)] for w in EXAMPLES}
    return out


def main(folder, kind, vocab, source):
    folder = Path(folder)
    train_docs, held = texts(source)
    t = time.perf_counter()
    tok = subword.train(kind, train_docs, vocab)
    out = {"kind": kind, "vocab": vocab, "source": source, "train_s": round(time.perf_counter() - t, 1)}
    out |= {"train_bytes": sum(len(d.encode()) for d in train_docs)} | measure(tok, train_docs, held)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(folder / "tokenizer.json")
    atomic_write(folder / "results.json", lambda tmp: tmp.write_text(json.dumps(out, indent=1)))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
