"""The vocabulary study (issue 22; docs/tokenizers.md): our BPE, WordPiece and Unigram trainers (subword.py)
at 1k, 4k, 8k, 16k and 32k on the books, and at 8k on the Wikipedia sample, measured on held-out text
(studies/_vocabulary.py: fertility, bytes per token, unknown tokens, vocabulary used, rare and unseen
words); then one measure that does not depend on the tokenizer: the same small GPT trained for the same
steps on the same bytes of books per step (subwords: 12 windows of 64 tokens; characters: 48 windows of
64) with each 8k tokenizer and with characters, in bits per byte on the held-out books (val_bpb)."""

from study import Run

KINDS, SIZES = ("bpe", "wordpiece", "unigram"), (1000, 4000, 8000, 16000, 32000)
MINUTES = {"bpe": 0.5, "wordpiece": 1.0, "unigram": 7.0}  # training + measuring, on the books
STATS = [(kind, size, "books") for size in SIZES for kind in KINDS] + [(kind, 8000, "wiki") for kind in KINDS]
LM = {"bpe": "our-bpe8000", "wordpiece": "our-wordpiece8000", "unigram": "our-unigram8000", "char": "char"}
GPT = ["train.py", "--preset", "shakespeare-char-cpu", "--dataset", "{runs}/prep-{kind}", "--out-dir", "{out}"]
GPT += ["--max-steps", "2000", "--eval-every", "500", "--save-every", "500", "--eval-iters", "50"]


def measured(kind, size, source):
    return Run(
        f"{kind}-{size}-{source}", ["studies/_vocabulary.py", "{out}", kind, str(size), source], minutes=MINUTES[kind]
    )


def language_model(kind):  # its data (tokenizer trained on the books' training documents), then the GPT
    prep = ["data.py", "lm", "--source", "books", "--tokenizer", LM[kind], "--out", "{out}"]
    command = [part.replace("{kind}", kind) for part in GPT] + ["--batch-size", "48" if kind == "char" else "12"]
    return [
        Run(f"prep-{kind}", prep, minutes=0.5 + MINUTES.get(kind, 0)),
        Run(f"gpt-{kind}", command, needs=[f"prep-{kind}"], minutes=4.0, metric="val_bpb"),
    ]


# the quick algorithms first (a session's --hours finishes their rows), Unigram's slow trainer last
RUNS = [measured(*s) for s in STATS if s[0] != "unigram"]
RUNS += language_model("bpe") + language_model("wordpiece") + language_model("char")
RUNS += [measured(*s) for s in STATS if s[0] == "unigram"] + language_model("unigram")


def stats(results, kind, size, source):
    r = results.get(f"{kind}-{size}-{source}")
    return r and r["metrics"].get("results")


def table(results):
    """Per tokenizer: held-out fertility and bytes per token (WikiText-2 test, the Wikipedia sample, GLUE),
    unknown tokens, vocabulary used, unseen and rare words' fertility; then the GPTs' bits per byte."""
    lines = [
        "| tokenizer | trained on | tokens/word: wikitext-2, wiki, glue | bytes/token: wikitext-2, wiki, glue"
        " | unknown tokens | vocabulary used | tokens/word: frequent, rare, unseen words | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, size, source in STATS:
        r = stats(results, kind, size, source)
        if not r:
            lines.append(f"| {kind} {size:,} | {source} | - | - | - | - | - | - |")
            continue
        sets, bands = r["sets"].values(), r["bands"].values()
        fert = ", ".join(f"{s['tokens_per_word']:.2f}" for s in sets)
        bpt = ", ".join(f"{s['bytes_per_token']:.2f}" for s in sets)
        unk = max(s["unk_rate"] for s in sets)
        words = ", ".join(f"{b['tokens_per_word']:.2f}" for b in bands)
        cells = [fert, bpt, f"{unk:.2%} (most)", f"{r['vocab_used']:.1%}", words, f"{r['train_s']:.0f} s"]
        lines.append(f"| {kind} {size:,} | {source} | " + " | ".join(cells) + " |")
    lines += ["", "| GPT on the books (same model, steps, bytes per step) | val_bpb | val_loss (per token) |"]
    lines.append("|---|---|---|")
    for kind, tokenizer in LM.items():
        r = results.get(f"gpt-{kind}")
        m = r["metrics"] if r else {}
        cells = f"{m['val_bpb']:.3f} | {m['val_loss']:.3f}" if "val_bpb" in m else "- | -"
        lines.append(f"| {tokenizer} | {cells} |")
    return "\n".join(lines)


def figure(results):
    """Held-out fertility on WikiText-2 test by vocabulary size, per algorithm."""
    groups = {}
    for kind, size, source in STATS:
        if source == "books" and (r := stats(results, kind, size, source)):
            groups.setdefault(f"{size // 1000}k", {})[kind] = r["sets"]["wikitext-2 test"]["tokens_per_word"]
    return groups and ("Tokens per word on WikiText-2 test (trained on the books)", "tokens per word", groups)
