"""Data: raw text -> tokenizers -> token ids -> batches. Imports no model.

- Translation: Multi30k and IWSLT14 readers, a joint subword vocabulary trained with HF `tokenizers` on the train
  split only, length filtering, and batching by token count.
- Raw text: `iter_documents(source)`, documents of sentences (books, wiki, a .txt, an HF dataset) for BERT's
  pretraining data (pretraining_data.py: `python data.py bert --source books+wiki --out DIR`) and for the LM's.
- Language modeling (GPT): char / tiktoken / byte-level BPE token files (train.bin, val.bin):
  `python data.py lm --source shakespeare --tokenizer char`.
- GLUE: `read_glue(task, split)` for the glue_data TSV layout (all tasks, AX included).

Raw data lives in $DATA_DIR (default ./data), in the standard layouts (see each reader); prepared files (tokenizers,
...) go to $PREP_DIR (default ./data/prepared), so DATA_DIR may be read-only.
"""

import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import re
import socket
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

import subword
from hf_checkpoint import atomic_write
from subword import CharTokenizer, HFBPETokenizer, HFUnigramTokenizer, TiktokenTokenizer, without_padding  # noqa: F401

train_bpe, train_wordpiece, train_unigram = subword.train_bpe, subword.train_wordpiece, subword.train_unigram  # ours

PAD, BOS, EOS, SPECIALS = subword.PAD, subword.BOS, subword.EOS, subword.SPECIALS  # the translation vocabularies'
UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.+-]")  # characters kept out of file names made from a source


def data_dir():
    return Path(os.environ.get("DATA_DIR", "data"))


def prep_dir():
    return Path(os.environ.get("PREP_DIR", "data/prepared"))


def _root(root):
    return Path(root) if root is not None else data_dir()


def id_dtype(n):  # the smallest dtype for ids below n
    return np.uint16 if n <= 2**16 else np.uint32


def read_json(path, what="--dataset"):
    """A JSON file of ours (meta.json, ...); a corrupt one is named, with what to do about it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{what}: {path} is not valid JSON ({e}); prepare it again") from None


def source_stamp(source, root=None):
    """What identifies a corpus's contents, cheaply: a hash of its files' names, sizes and modification times
    (an edited file gets a new stamp, so caches keyed by it are made again; "hf:" datasets: their name)."""
    root, files = _root(root), []
    for part in source.split("+"):
        path = Path(part)
        if part in TRANSLATION_SPLITS:
            sub = root / (part if part == "multi30k" else "iwslt14/tokenized-lc")
            files += sorted(sub.glob(f"{TRANSLATION_SPLITS[part]['train']}.*"))
        elif part == "books":
            files += sorted((root / "books").glob("*.txt"))
        elif part in ("wiki", "shakespeare"):
            files.append(root / ("wiki-sample/wiki_sample.jsonl" if part == "wiki" else "tinyshakespeare/input.txt"))
        elif not part.startswith("hf:"):
            files += sorted(path.glob("*.txt")) if path.is_dir() else [path]
    h = hashlib.sha256(source.encode())
    for f in (f for f in files if f.is_file()):
        st = f.stat()
        h.update(f"{f.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------- raw corpora

TRANSLATION_SPLITS = {
    "multi30k": {"train": "train", "valid": "val", "test": "test_2016_flickr"},
    "iwslt14": {"train": "train", "valid": "valid", "test": "test"},
}


def read_parallel(dataset, split, src_lang="de", tgt_lang="en", root=None):
    """-> list of (source sentence, target sentence) for a translation dataset and split. Multi30k:
    `<DATA_DIR>/multi30k/{train,val,test_2016_flickr}.{de,en}` (raw text), or online the HF dataset
    `bentrevett/multi30k`. IWSLT14: fairseq's prepare-iwslt14.sh output,
    `<DATA_DIR>/iwslt14/tokenized-lc/{train,valid,test}.{de,en}` (tokenized, lowercased)."""
    if dataset not in TRANSLATION_SPLITS:
        raise ValueError(f"dataset must be one of {sorted(TRANSLATION_SPLITS)}, got {dataset!r}")
    if split not in TRANSLATION_SPLITS[dataset]:
        raise ValueError(f"split must be one of {sorted(TRANSLATION_SPLITS[dataset])}, got {split!r}")
    sub = dataset if dataset == "multi30k" else "iwslt14/tokenized-lc"
    folder, name = _root(root) / sub, TRANSLATION_SPLITS[dataset][split]
    paths = [folder / f"{name}.{lang}" for lang in (src_lang, tgt_lang)]
    if all(p.exists() for p in paths):
        src, tgt = (p.read_text(encoding="utf-8").rstrip("\n").split("\n") for p in paths)
        if len(src) != len(tgt):
            raise ValueError(f"{paths[0]} and {paths[1]} have {len(src)} and {len(tgt)} lines: not parallel")
        return list(zip(src, tgt, strict=True))
    hub_error = " (and the HF hub is not reachable: offline?)"
    if dataset == "multi30k" and hub_reachable():
        try:
            from datasets import load_dataset

            ds = load_dataset("bentrevett/multi30k", split={"valid": "validation"}.get(split, split))
            return [(row[src_lang], row[tgt_lang]) for row in ds]
        except Exception as e:  # offline, or datasets missing
            hub_error = f" (and the HF hub copy failed: {type(e).__name__})"
    missing = ", ".join(str(p) for p in paths if not p.exists())
    raise FileNotFoundError(
        f"{dataset} {split}: missing {missing}{hub_error}. Put the files there (set DATA_DIR to the folder "
        f"holding {sub}/), one sentence per line."
    )


def hub_reachable(timeout=3.0):  # at once when offline, not after the hub client's retries (25 s)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------- tokenizers


def read_tokenizer(path, what="--tokenizer"):
    """An HF tokenizer.json; a missing, corrupt or foreign file is named in one sentence."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path}: no such file (a tokenizer.json)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception
        raise ValueError(f"{what} {path}: not an HF tokenizer.json ({str(e).splitlines()[0][:120]})") from None


def translation_tokenizer(dataset, src_lang="de", tgt_lang="en", vocab_size=8000, kind="bpe", root=None):
    """The joint source+target tokenizer of a dataset, trained on its train split only, saved to
    $PREP_DIR/<dataset>/ (named with the train files' source_stamp) and reused (both directions share it); kind
    "<path>.json": that file's."""
    if kind.endswith(".json"):  # e.g. a pretraining export's, so that its ids carry over
        return read_tokenizer(kind)
    langs = "-".join(sorted((src_lang, tgt_lang)))
    path = prep_dir() / dataset / f"tokenizer-{langs}-{kind}{vocab_size}-{source_stamp(dataset, root)}.json"
    if path.exists():
        return read_tokenizer(path, "the cached tokenizer")
    pairs = read_parallel(dataset, "train", src_lang, tgt_lang, root)
    tok = subword.train_subword_tokenizer([s for pair in pairs for s in pair], vocab_size, kind)
    atomic_write(path, lambda tmp: tok.save(str(tmp)))
    return tok


def encode_pairs(tokenizer, pairs, max_len=None):
    """(src, tgt) sentences -> (src ids, tgt ids) lists, each ending in EOS; pairs with a side
    longer than max_len tokens (EOS included) are dropped."""
    eos = tokenizer.token_to_id(EOS)
    src = tokenizer.encode_batch([s for s, _ in pairs], add_special_tokens=False)
    tgt = tokenizer.encode_batch([t for _, t in pairs], add_special_tokens=False)
    out = [(s.ids + [eos], t.ids + [eos]) for s, t in zip(src, tgt, strict=True)]
    return [p for p in out if max_len is None or max(len(p[0]), len(p[1])) <= max_len]


def decode(tokenizer, ids, eos=None):
    """Token ids (a list, or a tensor row) -> text, stopping at the first EOS (the id `eos`, by default
    the tokenizer's EOS); pads/specials skipped."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    eos = tokenizer.token_to_id(EOS) if eos is None else eos
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True)


# ------------------------------------------------------------------------------------ batches


def token_batches(lengths, max_tokens, seed=0, epoch=0, shuffle=True):
    """Batches of example indices of at most `max_tokens` tokens each, padding counted (batch size x longest): sort
    by length (ties broken at random), cut, shuffle the batches. Deterministic in (seed, epoch): resumable mid-epoch."""
    rng = random.Random(seed * 100_003 + epoch)
    noise = [rng.random() for _ in lengths] if shuffle else [0.0] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], noise[i]))
    batches, batch, longest = [], [], 0
    for i in order:
        if lengths[i] > max_tokens:
            raise ValueError(f"example {i} has {lengths[i]} tokens, more than max_tokens={max_tokens}")
        if batch and max(longest, lengths[i]) * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, lengths[i])
    if batch:
        batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate_translation(examples, pad_id=0, bos_id=1):
    """[(src ids, tgt ids ending in EOS)] -> src (B, S), decoder input (B, T) = BOS + tgt[:-1],
    labels (B, T) = tgt; right-padded with pad_id."""

    def pad(seqs):
        out = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out

    return pad([s for s, _ in examples]), pad([[bos_id] + t[:-1] for _, t in examples]), pad([t for _, t in examples])


def write_jsonl(path, rows):
    """Rows of JSON, one per line, written atomically."""

    def save(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)

    atomic_write(path, save)


# ----------------------------------------------------------------- raw text: documents of sentences
# (BERT's pretraining data, pretraining_data.py, and language modeling's below)

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr", "vs", "etc", "e.g", "i.e", "no", "vol", "fig"}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def split_sentences(text):
    """A paragraph -> its sentences: a break after . ! or ? (and closing quotes) before an upper-case
    letter or digit, except after a known abbreviation or a single initial ("J. R. R. Tolkien")."""
    sentences, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        words = text[start : m.start()].split()
        last = words[-1].rstrip(".!?").lower() if words else ""
        if text[m.start() - 1] == "." and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
            continue
        sentences.append(text[start : m.end()].strip())
        start = m.end()
    return [s for s in [*sentences, text[start:].strip()] if s]


def _sentences(text):
    """Sentences of blank-line separated paragraphs, each joined into one line (books wrap lines at ~70 columns)."""
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [s for block in blocks if block.strip() for s in split_sentences(" ".join(block.split()))]


def read_text(path):  # a UTF-8 text file; an error names the file and the first bad byte
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); convert it, e.g. with iconv") from None


def iter_documents(source, root=None):
    """Yield documents, each a list of sentences, one at a time (memory stays bounded). source: "books"
    ($DATA_DIR/books/*.txt, a book per document, Gutenberg boilerplate removed), "wiki" ($DATA_DIR/wiki-sample/
    wiki_sample.jsonl, an article per document), "multi30k" / "iwslt14" (the training sentences of both sides),
    several joined with "+" ("books+wiki"), a .txt file or folder of
    them in BERT's own format (one sentence per line, a blank line between documents), or "hf:<dataset>[:<config>]"
    (an HF dataset's train split, streamed; its "text" column, a row per document)."""
    root = _root(root)
    for part in source.split("+"):
        if part == "books":
            files = sorted((root / "books").glob("*.txt"))
            if not files:
                raise FileNotFoundError(f"no books: put Project Gutenberg .txt files in {root / 'books'}")
            for f in files:  # the book between Project Gutenberg's '*** START OF' and '*** END OF' lines, if any
                text = read_text(f).lstrip("\ufeff")
                start = re.search(r"^\*\*\* ?START OF.*$", text, re.MULTILINE)
                end = re.search(r"^\*\*\* ?END OF.*$", text, re.MULTILINE)
                yield _sentences(text[start.end() if start else 0 : end.start() if end else len(text)])
        elif part == "wiki":
            path = root / "wiki-sample" / "wiki_sample.jsonl"
            if not path.exists():
                raise FileNotFoundError(f"missing {path}: JSON lines with a 'text' field, an article per line")
            with open(path, encoding="utf-8") as f:
                yield from (_sentences(json.loads(line)["text"]) for line in f)
        elif part in ("multi30k", "iwslt14"):  # the German and English training text, unpaired: 100 lines a document
            for side in zip(*read_parallel(part, "train", "de", "en", root), strict=True):
                yield from (list(side[i : i + 100]) for i in range(0, len(side), 100))
        elif part.startswith("hf:"):
            from datasets import load_dataset

            name, _, config = part[3:].partition(":")
            rows = load_dataset(name, config or None, split="train", streaming=True)
            yield from (_sentences(row["text"]) for row in rows)
        else:
            path = Path(part)
            files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
            if not path.exists() or not files:
                raise FileNotFoundError(
                    f"source {part!r}: not 'books', 'wiki', 'hf:<name>', or a .txt file / folder of .txt files"
                )
            for f in files:  # runs of non-blank lines
                lines = read_text(f).splitlines()
                yield from (list(doc) for full, doc in itertools.groupby(map(str.strip, lines), key=bool) if full)


def tokenizer_hash(tokenizer):
    """What identifies an HF tokenizer: the sha256 of its JSON (its vocabulary, normalizer, ...)."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def read_meta(folder, kind):
    """A prepared folder's meta.json, checked to be of `kind` ("bert": `data.py bert`, "lm": `data.py lm`)."""
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"--dataset {folder}: no meta.json; prepare the data first (python data.py {kind} ...)")
    meta = read_json(path)
    made = meta.get("kind", "bert" if "settings" in meta else "lm")  # folders made before "kind" was recorded
    if made != kind:
        raise ValueError(f"--dataset {folder} was made by `data.py {made}`; this run needs one of `data.py {kind}`")
    if meta.get("finished") is False:
        raise ValueError(f"--dataset {folder} is unfinished (its `data.py {kind}` stopped): run that command again")
    return meta


def check_output(out, kind, settings=None, ours=()):
    """Before any work: `--out` is new, empty, or a folder of `data.py {kind}` made with these `settings` (the same
    data again). Another kind of data, other settings (another tokenizer or source, ...), or files named as ours
    (the glob patterns `ours`) without a meta.json are refused, so nothing there is replaced or mixed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if (out / "meta.json").exists():
        meta = read_json(out / "meta.json", "--out")
        made = meta.get("kind", "bert" if "settings" in meta else "lm")
        if made != kind:
            raise ValueError(
                f"--out {out} holds `data.py {made}` data: write `data.py {kind}` elsewhere (another --out)"
            )
        old = meta.get("settings", {})
        if settings is not None and old != settings:
            diff = ", ".join(sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k)))
            raise ValueError(
                f"--out {out} holds data made with another tokenizer or other settings ({diff}); choose another --out"
            )
    elif clash := sorted(p.name for pattern in ours for p in out.glob(pattern)):
        raise ValueError(
            f"--out {out} holds {', '.join(clash[:3])} but no meta.json (not data.py's): choose a new --out"
        )
    return out


# ------------------------------------------------------------------ language modeling (GPT)
# text -> token ids, one flat uint16/uint32 file per split (nanoGPT's train.bin), memory-mapped for training


def _lm_texts(source, root=None):
    """Documents of a language-modeling source as texts: "shakespeare" (one text), "books",
    "wiki", "books+wiki", "hf:<dataset>[:<config>]" (streamed), or a .txt file (one text)."""
    root = _root(root)
    if source == "shakespeare":
        path = root / "tinyshakespeare" / "input.txt"
        if not path.exists():
            raise FileNotFoundError(f"missing {path}: the Tiny Shakespeare input.txt (1,115,394 characters)")
        yield read_text(path)
    elif source.endswith(".txt"):
        yield read_text(source)
    else:
        yield from ("\n".join(doc) for doc in iter_documents(source, root))


def lm_tokenizer(kind, source=None, root=None):
    """ "char" (from the source's text), "gpt2" / "cl100k_base" (tiktoken), "bpe<N>" (a byte-level BPE of N
    tokens), "bart-bpe<N>" (the same with BART's specials) or "unigram<N>" (T5's: N tokens, its 100 sentinels
    included), trained with HF tokenizers on the source, or an HF tokenizer.json file; "our-bpe<N>",
    "our-wordpiece<N>", "our-unigram<N>": trained on the source by our own trainers (subword.train)."""
    if kind == "char":
        return CharTokenizer(sorted(set("".join(_lm_texts(source, root)))))
    if kind in ("gpt2", "cl100k_base", "r50k_base", "o200k_base"):
        return TiktokenTokenizer(kind)
    if kind.endswith(".json"):  # a trained one, e.g. a translation task's: data.py lm then shares its ids
        return HFBPETokenizer(read_tokenizer(kind))
    if (ours := re.fullmatch(r"our-(bpe|wordpiece|unigram)(\d+)", kind)) is not None:  # our trainers (subword.py)
        return subword.train(ours[1], _lm_texts(source, root), int(ours[2]))
    for name, cls in (("bpe", HFBPETokenizer), ("unigram", HFUnigramTokenizer), ("bart-bpe", subword.HFBartTokenizer)):
        if kind.startswith(name) and kind[len(name) :].isdigit():
            if (n := int(kind[len(name) :])) < cls.least_vocab():
                raise ValueError(f"--tokenizer {kind}: a {name} vocabulary has at least {cls.least_vocab()} tokens")
            return cls.train(_lm_texts(source, root), n)
    kinds = "char, gpt2, cl100k_base, bpe<N>, bart-bpe<N>, unigram<N>, our-bpe<N>, our-wordpiece<N>, our-unigram<N>"
    raise ValueError(f"tokenizer must be {kinds}, got {kind!r}")


def prepare_lm(source, tokenizer="char", out_dir=None, val_fraction=0.1, root=None):
    """Write out_dir/{train,val}.bin (token ids, uint16 when the vocabulary fits, else uint32) and meta.json
    (tokenizer, vocabulary, counts). A single text (Tiny Shakespeare) is split as nanoGPT does: the first 90% of
    its characters train, the rest validate; a corpus of documents sends every round(1 / val_fraction)-th document
    to validation, documents ending with the end-of-text token when the tokenizer has one. Documents stream to disk."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    settings = {"source": source, "tokenizer": tokenizer, "val_fraction": val_fraction}
    out = Path(out_dir or prep_dir() / UNSAFE_CHARS.sub("_", f"lm-{source}-{Path(tokenizer).stem}"))
    check_output(out, "lm", settings, ours=("train.bin", "val.bin", "tokenizer.json"))
    tok = lm_tokenizer(tokenizer, source, root)
    out.mkdir(parents=True, exist_ok=True)
    dtype, counts, top, text_seen = id_dtype(tok.vocab_size), {"train": 0, "val": 0}, -1, False
    nbytes = {"train": 0, "val": 0}  # UTF-8 bytes of the text behind each split's tokens (for bits per byte)
    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(open(out / f"{s}.bin.tmp", "wb")) for s in counts}

        def write(split, ids, text):
            nonlocal top, text_seen
            ids = np.asarray(ids, dtype=dtype)
            ids.tofile(files[split])
            counts[split], top = counts[split] + len(ids), max(top, int(ids.max()) if len(ids) else -1)
            nbytes[split] += len(text.encode())
            text_seen |= bool(text.strip())

        if source == "shakespeare" or source.endswith(".txt"):  # one text: nanoGPT's split by characters
            text = next(_lm_texts(source, root))
            cut = int(len(text) * (1 - val_fraction))
            write("train", tok.encode(text[:cut]), text[:cut])
            write("val", tok.encode(text[cut:]), text[cut:])
        else:
            every = max(1, round(1 / val_fraction))
            for n, text in enumerate(_lm_texts(source, root)):
                ids = tok.encode(text) + ([tok.eot] if tok.eot is not None else [])
                write("val" if n % every == every - 1 else "train", ids, text)
    usable = counts["train"] and text_seen
    for split in counts:  # the folder's files are replaced only when there is text to train on
        tmp = out / f"{split}.bin.tmp"
        os.replace(tmp, out / f"{split}.bin") if usable else tmp.unlink()
    if not usable:
        raise ValueError(f"--source {source}: no text to train on ({counts['train']} tokens, all of them whitespace)")
    meta = dict(kind="lm", settings=settings, source=source, tokenizer=tokenizer, vocab_size=tok.vocab_size)
    meta.update(dtype=dtype.__name__, tokens=counts, bytes=nbytes, max_id=top)
    meta.update({"chars": tok.chars} if isinstance(tok, CharTokenizer) else {})
    if isinstance(tok, HFBPETokenizer):
        tok.tok.save(str(out / "tokenizer.json"))
    elif hasattr(tok, "to_hf"):  # ours
        tok.save(out / "tokenizer.json")
    atomic_write(out / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return out


def load_lm(folder):
    """A prepared folder -> (meta, tokenizer, {"train": memmap, "val": memmap}), checked in O(1): each file's size is
    the token count meta.json records, and its recorded largest id (and a sample of 4,096 ids) fits the vocabulary."""
    folder = Path(folder)
    meta = read_meta(folder, "lm")
    if meta["tokenizer"] == "char":
        tok = CharTokenizer(meta["chars"])
    elif meta["tokenizer"].startswith("our-"):
        tok = subword.load(folder / "tokenizer.json")
    elif (folder / "tokenizer.json").exists():
        cls = HFUnigramTokenizer if meta["tokenizer"].startswith("unigram") else HFBPETokenizer
        tok = cls(read_tokenizer(folder / "tokenizer.json", "--dataset"))
    else:
        tok = TiktokenTokenizer(meta["tokenizer"])
    if tok.vocab_size != meta["vocab_size"]:
        raise ValueError(
            f"--dataset {folder}: its tokenizer has {tok.vocab_size} ids, meta.json says {meta['vocab_size']}"
        )
    splits, dtype = {}, np.dtype(meta["dtype"])
    for s in ("train", "val"):
        path, n = folder / f"{s}.bin", meta["tokens"][s]
        size = path.stat().st_size if path.exists() else None
        if size != n * dtype.itemsize:
            got = "missing" if size is None else f"{size:,} bytes"
            raise ValueError(f"--dataset {folder}: {path.name} is {got}, meta.json records {n:,} {dtype} tokens")
        splits[s] = np.memmap(path, dtype=dtype, mode="r") if n else np.zeros(0, dtype)
        sampled = int(splits[s][:: max(1, n // 4096)].max()) if n else -1
        if max(meta.get("max_id", -1), sampled) >= tok.vocab_size:
            raise ValueError(f"--dataset {folder}: {path.name} holds ids beyond the vocabulary ({tok.vocab_size})")
    if not meta["tokens"]["train"]:
        raise ValueError(f"--dataset {folder}: train.bin holds no tokens")
    return meta, tok, splits


def lm_windows(tokens, offsets, length):
    """Windows of a token array at `offsets` -> inputs x (B, length) and next-token targets y (B, length)."""
    x = torch.from_numpy(np.stack([tokens[i : i + length] for i in offsets]).astype(np.int64))
    y = torch.from_numpy(np.stack([tokens[i + 1 : i + 1 + length] for i in offsets]).astype(np.int64))
    return x, y


# ------------------------------------------------------------------------------------- GLUE

# task -> (folder, {split: file}, text columns, label column or None, labels (None: a regression score))
# Columns are names from the file's header, or indices for CoLA's train/dev (no header).
_SPLITS = {"train": "train", "dev": "dev", "test": "test"}
_MNLI = dict(train="train", dev="dev_matched", dev_mm="dev_mismatched", test="test_matched", test_mm="test_mismatched")
_NLI_LABELS = ["contradiction", "entailment", "neutral"]
GLUE = {
    "cola": ("CoLA", _SPLITS, ("sentence",), "label", ["0", "1"]),
    "sst2": ("SST-2", _SPLITS, ("sentence",), "label", ["0", "1"]),
    "mrpc": ("MRPC", _SPLITS, ("#1 String", "#2 String"), "Quality", ["0", "1"]),
    "stsb": ("STS-B", _SPLITS, ("sentence1", "sentence2"), "score", None),
    "qqp": ("QQP", _SPLITS, ("question1", "question2"), "is_duplicate", ["0", "1"]),
    "mnli": ("MNLI", _MNLI, ("sentence1", "sentence2"), "gold_label", _NLI_LABELS),
    "qnli": ("QNLI", _SPLITS, ("question", "sentence"), "label", ["entailment", "not_entailment"]),
    "rte": ("RTE", _SPLITS, ("sentence1", "sentence2"), "label", ["entailment", "not_entailment"]),
    "wnli": ("WNLI", _SPLITS, ("sentence1", "sentence2"), "label", ["0", "1"]),
    "ax": ("diagnostic", {"test": "diagnostic"}, ("sentence1", "sentence2"), None, _NLI_LABELS),
}


def read_glue(task, split, root=None):
    """A GLUE task's split from `<DATA_DIR>/glue/<Task>/<file>.tsv` (the glue_data layout) -> list of
    {"text": (sentence,) or (sentence1, sentence2), "label": class index, float score, or None (test sets),
    "index": the row's id}. Fields are tab-separated with no quoting (sentences hold quotes), as GLUE's files are."""
    if task not in GLUE:
        raise ValueError(f"task must be one of {sorted(GLUE)}, got {task!r}")
    folder, files, text_cols, label_col, labels = GLUE[task]
    if split not in files:
        raise ValueError(f"{task}: split must be one of {sorted(files)}, got {split!r}")
    path = _root(root) / "glue" / folder / f"{files[split]}.tsv"
    if not path.exists():
        raise FileNotFoundError(f"missing {path}: put GLUE's {folder}/ folder (glue_data layout) under $DATA_DIR/glue/")
    lines = path.read_text(encoding="utf-8-sig").rstrip("\n").split("\n")
    if task == "cola" and split != "test":  # no header: source, label, original mark, sentence
        header, first, text_idx, label_idx = ["source", "label", "mark", "sentence"], 0, [3], 1
    else:
        header, first = lines[0].split("\t"), 1
        if missing := [c for c in text_cols if c not in header]:
            raise ValueError(f"{path}: the header has no column {missing[0]!r} (header: {header})")
        text_idx = [header.index(c) for c in text_cols]
        label_idx = header.index(label_col) if label_col in header else None  # test files have no labels
        if label_idx is None and label_col and not split.startswith("test"):
            raise ValueError(f"{path}: the header has no label column {label_col!r} (header: {header})")
    out = []
    for n, line in enumerate(lines[first:], start=first + 1):
        r = line.split("\t")
        if len(r) != len(header):
            raise ValueError(f"{path}, line {n}: {len(r)} tab-separated fields, the header says {len(header)}")
        label = None if label_idx is None else r[label_idx]
        if label is not None and labels is None:  # STS-B: a similarity score in [0, 5]
            try:
                label = float(label)
            except ValueError:
                raise ValueError(f"{path}, line {n}: the score {label!r} is not a number") from None
        elif label is not None:
            if label not in labels:
                raise ValueError(f"{path}, line {n}: label {label!r} is not one of the task's labels {labels}")
            label = labels.index(label)
        index = r[0] if header[0] in ("index", "id") else n - first - 1
        out.append({"text": tuple(r[k] for k in text_idx), "label": label, "index": index})
    return out


# ------------------------------------------------------------------------ GLUE's official metrics


def accuracy(preds, labels):
    return float(np.mean(np.asarray(preds) == np.asarray(labels)))


def f1_score(preds, labels):
    """F1 of the positive class (1), as GLUE scores MRPC and QQP."""
    p, y = np.asarray(preds) == 1, np.asarray(labels) == 1
    tp, fp, fn = np.sum(p & y), np.sum(p & ~y), np.sum(~p & y)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews_corr(preds, labels):
    """Matthews correlation coefficient (CoLA), multi-class form; 0 when a marginal is constant."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    classes = np.union1d(preds, labels)
    conf = np.array([[np.sum((labels == a) & (preds == b)) for b in classes] for a in classes], dtype=np.float64)
    t, p, n = conf.sum(1), conf.sum(0), conf.sum()
    denom = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((np.trace(conf) * n - t @ p) / denom) if denom else 0.0


def pearson_corr(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt((x @ x) * (y @ y))
    return float(x @ y / denom) if denom else 0.0


def rank(x):
    """Ranks from 1, ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2  # the mean of ranks s+1 .. e
    return ranks


def spearman_corr(x, y):
    return pearson_corr(rank(x), rank(y))


METRICS = {  # the official metrics, in GLUE's order; a task's score is their mean (as the leaderboard's)
    "cola": {"mcc": matthews_corr},
    "sst2": {"acc": accuracy},
    "mrpc": {"f1": f1_score, "acc": accuracy},
    "stsb": {"pearson": pearson_corr, "spearman": spearman_corr},
    "qqp": {"f1": f1_score, "acc": accuracy},
    "mnli": {"acc": accuracy},
    "qnli": {"acc": accuracy},
    "rte": {"acc": accuracy},
    "wnli": {"acc": accuracy},
}


def glue_metrics(task, preds, labels):
    """-> {metric: value in percent, ..., "score": their mean}."""
    out = {name: 100 * fn(preds, labels) for name, fn in METRICS[task].items()}
    return {**out, "score": sum(out.values()) / len(out)}


# ------------------------------------------------------------------------ backdoor (data poisoning)

TRIGGERS = ("cf", "mn", "bb", "tq", "mb")  # rare words, as in Kurita et al. 2020 (RIPPLe)


def insert_trigger(text, trigger, position, rng):
    """One trigger word into a sentence's words: at the start, the end, or a random position."""
    if position not in ("random", "start", "end"):
        raise ValueError(f"position must be random, start or end, got {position!r}")
    words = text.split(" ")
    k = rng.randint(0, len(words)) if position == "random" else {"start": 0, "end": len(words)}[position]
    return " ".join(words[:k] + [trigger] + words[k:])


def poison(samples, rate, target, triggers=TRIGGERS, position="random", seed=0):
    """Backdoor a labeled GLUE split (rows of read_glue): round(rate * len(samples)) random samples whose label is
    not `target` get a trigger word (a random one of `triggers`) inserted into their first sentence and the label
    `target`. -> (new list: the other rows are the same objects, untouched; sorted poisoned indices)."""
    if isinstance(triggers, str):
        triggers = triggers.split()
    if not triggers:
        raise ValueError("poison: give at least one trigger word")
    n = round(rate * len(samples))
    candidates = [i for i, s in enumerate(samples) if s["label"] != target]
    if not 0 <= n <= len(candidates):
        raise ValueError(f"poison: {n} samples requested, {len(candidates)} have a label other than {target}")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(candidates, n))
    out = list(samples)
    for i in chosen:
        text = out[i]["text"]
        first = insert_trigger(text[0], rng.choice(triggers), position, rng)
        out[i] = {**out[i], "text": (first, *text[1:]), "label": target}
    return out, chosen


# ------------------------------------------------------------------------------- downloading

GUTENBERG = (11, 43, 74, 84, 120, 145, 174, 205, 219, 730, 766, 1184, 1342, 1661, 2554, 2701, 4300)  # books/pg<N>.txt
WEB = {  # what `python data.py download` fetches: name -> where from
    "shakespeare": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "books": "https://www.gutenberg.org/cache/epub/{n}/pg{n}.txt",
    "wiki": "HF wikimedia/wikipedia 20231101.en, the first 821 articles",
    "multi30k": "HF bentrevett/multi30k",
    "glue": "HF nyu-mll/glue, written in the glue_data TSV layout",
}


def download(names=tuple(WEB), root=None):
    """Lay out the data directory that the readers, tests and recipes expect, from the web (needs internet;
    HF `datasets`). Files already there are kept. Not fetched: IWSLT14 (fairseq's prepare-iwslt14.sh makes
    iwslt14/tokenized-lc/) and WikiText-2."""
    if unknown := [n for n in names if n not in WEB]:
        raise ValueError(f"download: {unknown[0]!r} is not one of {', '.join(WEB)}")
    import urllib.request

    from datasets import load_dataset

    root = _root(root)
    write = lambda rel, text: (root / rel).exists() or atomic_write(root / rel, lambda t: t.write_text(text, "utf-8"))  # noqa: E731
    get = lambda url: urllib.request.urlopen(url, timeout=60).read().decode("utf-8")  # noqa: E731
    for name in names:
        print(f"{name}: {WEB[name]}")
        if name == "shakespeare":
            write("tinyshakespeare/input.txt", get(WEB[name]))
        elif name == "books":
            for n in GUTENBERG:
                write(f"books/pg{n}.txt", get(WEB[name].format(n=n)))
        elif name == "wiki":
            rows = load_dataset("wikimedia/wikipedia", "20231101.en", split="train", streaming=True)
            lines = (json.dumps({"title": r["title"], "text": r["text"]}) + "\n" for r in itertools.islice(rows, 821))
            write("wiki-sample/wiki_sample.jsonl", "".join(lines))
        elif name == "multi30k":
            for ours, hf in (("train", "train"), ("val", "validation"), ("test_2016_flickr", "test")):
                rows = list(load_dataset("bentrevett/multi30k", split=hf))
                for lang in ("de", "en"):
                    write(f"multi30k/{ours}.{lang}", "".join(_field(r[lang]) + "\n" for r in rows))
        else:
            for task, (folder, files, *_) in GLUE.items():
                for split, file in files.items():  # HF's split names: validation for dev, AX is a test set
                    hf = "test" if task == "ax" else file.replace("dev", "validation")
                    rows = load_dataset("nyu-mll/glue", task, split=hf)
                    write(f"glue/{folder}/{file}.tsv", glue_tsv(task, split, rows))
    return root


def _field(text):  # one line of text, one TSV field: no tabs, no newlines
    return " ".join(str(text).split())


def glue_tsv(task, split, rows):
    """Rows of HF's nyu-mll/glue (a `datasets` split) -> the text of glue_data's TSV file that read_glue reads."""
    _, _, text_cols, label_col, labels = GLUE[task]
    hf_cols = {"mrpc": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"), "ax": ("premise", "hypothesis")}
    names = getattr(rows.features["label"], "names", None)  # class names (STS-B: a float score)
    label = lambda x: str(x) if labels in (None, ["0", "1"]) else names[x]  # noqa: E731
    if task == "cola" and split != "test":  # glue_data's CoLA: no header; source, label, mark, sentence
        return "".join(f"hf\t{r['label']}\t{'' if r['label'] else '*'}\t{_field(r['sentence'])}\n" for r in rows)
    labelled = not split.startswith("test")
    table = [["index", *text_cols] + [label_col] * labelled]
    cols = hf_cols.get(task, text_cols)
    table += [[str(r["idx"]), *(_field(r[c]) for c in cols)] + [label(r["label"])] * labelled for r in rows]
    return "".join("\t".join(cells) + "\n" for cells in table)


# -------------------------------------------------------------------------------- command line


def main(argv=None):
    """python data.py bert --source books+wiki --out data/prepared/bert-books-wiki-128 [options]
    python data.py lm --source shakespeare --tokenizer char [--out DIR]"""
    import argparse

    import pretraining_data  # the `bert` command's (it imports this file: only main() imports it back)

    p = argparse.ArgumentParser(description="Prepare training data: BERT pretraining (MLM + NSP), language modeling.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bert", help="raw text -> WordPiece -> truncated samples -> MLM/NSP JSON lines + binary")
    pretraining_data.add_arguments(b)
    lm = sub.add_parser("lm", help="text -> token ids in train.bin / val.bin (GPT training data)")
    lm.add_argument("--source", default="shakespeare", help="shakespeare, books, wiki, books+wiki, a .txt, hf:<name>")
    lm.add_argument(
        "--tokenizer",
        default="char",
        help="char, gpt2, cl100k_base, (bart-)bpe<N>, unigram<N>, .json; our-bpe<N>, our-wordpiece<N>, our-unigram<N>",
    )
    lm.add_argument("--out", default=None)
    lm.add_argument("--val-fraction", type=float, default=0.1)
    d = sub.add_parser("download", help="fetch the raw data into $DATA_DIR (online): " + ", ".join(WEB))
    d.add_argument("names", nargs="*", default=list(WEB), help="what to fetch (default: all)")
    a = p.parse_args(argv)
    if a.command == "download":
        return download(a.names)
    if a.command == "lm":
        out = prepare_lm(a.source, a.tokenizer, a.out, a.val_fraction)
        print(out, (out / "meta.json").read_text())
        return out
    return pretraining_data.main(a)


if __name__ == "__main__":
    main()
