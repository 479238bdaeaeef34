"""Data: raw text -> tokenizers -> token ids -> batches. Imports no model.

- Translation: Multi30k and IWSLT14 readers, a joint subword vocabulary trained with HF `tokenizers` on the train
  split only, length filtering, and batching by token count.
- BERT pretraining: raw text -> sentences -> WordPiece -> create_pretraining_data's truncated samples -> MLM/NSP data
  as JSON lines and binary shards (sharded, parallel, resumable): `python data.py bert --source books+wiki --out DIR`.
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
import os
import random
import re
import shutil
import socket
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import subword
from hf_checkpoint import atomic_write
from subword import CharTokenizer, HFBPETokenizer, HFUnigramTokenizer, TiktokenTokenizer, without_padding  # noqa: F401

PAD, BOS, EOS, SPECIALS = subword.PAD, subword.BOS, subword.EOS, subword.SPECIALS  # the translation vocabularies'
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")  # characters kept out of file names made from a source


def data_dir():
    return Path(os.environ.get("DATA_DIR", "data"))


def prep_dir():
    return Path(os.environ.get("PREP_DIR", "data/prepared"))


def _root(root):
    return Path(root) if root is not None else data_dir()


def _id_dtype(n):  # the smallest dtype for ids below n
    return np.uint16 if n <= 2**16 else np.uint32


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


def tokenizer_file(path):  # a tokenizer.json named by --tokenizer
    if not Path(path).is_file():
        raise FileNotFoundError(f"--tokenizer {path}: no such file (a tokenizer.json)")
    return Tokenizer.from_file(str(path))


def translation_tokenizer(dataset, src_lang="de", tgt_lang="en", vocab_size=8000, kind="bpe", root=None):
    """The joint source+target tokenizer of a dataset, trained on its train split only, saved to
    $PREP_DIR/<dataset>/ and reused (both directions share it); kind "<path>.json": that file's."""
    if kind.endswith(".json"):  # e.g. a pretraining export's, so that its ids carry over
        return tokenizer_file(kind)
    langs = "-".join(sorted((src_lang, tgt_lang)))
    path = prep_dir() / dataset / f"tokenizer-{langs}-{kind}{vocab_size}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
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


def decode(tokenizer, ids):
    """Token ids (a list, or a tensor row) -> text, stopping at the first EOS; pads/specials skipped."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    eos = tokenizer.token_to_id(EOS)
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


# ------------------------------------------------------------------ BERT pretraining: raw text
#
# The seed's stages: raw text -> documents of sentences -> WordPiece ids -> truncated samples ([CLS] A [SEP] B [SEP],
# create_pretraining_data's semantics) -> MLM/NSP training data, written as JSON lines (readable) and as binary
# shards (uint16/uint32 .npy, memory-mapped by train.py).

CLS, SEP, MASK, WP_PAD, WP_UNK = "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"
WORDPIECE_SPECIALS = [WP_PAD, WP_UNK, CLS, SEP, MASK]

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


# ------------------------------------------------------------------ BERT pretraining: tokenizer


def train_wordpiece(texts, vocab_size=30522, lowercase=True):
    """A BERT WordPiece tokenizer (BERT's normalizer and pre-tokenizer, '##' continuations, the
    specials [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4) trained on an iterator of texts."""
    tok = Tokenizer(models.WordPiece(unk_token=WP_UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=WORDPIECE_SPECIALS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    cls, sep = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=[(CLS, cls), (SEP, sep)]
    )
    return tok


def bert_tokenizer(path=None, source=None, vocab_size=30522, lowercase=True, root=None):
    """A WordPiece tokenizer: loaded from `path` (a tokenizer.json or vocab.txt file, or a folder holding one, like an
    HF checkpoint; padding and truncation switched off, see without_padding), or trained on the corpus `source`
    (see iter_documents), cached in $PREP_DIR/bert/ and reused."""
    from tokenizers.implementations import BertWordPieceTokenizer

    if path is not None:
        path = Path(path)
        if path.is_dir():
            path = next((path / n for n in ("tokenizer.json", "vocab.txt") if (path / n).exists()), path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer: {path} is not a tokenizer.json or vocab.txt (or a folder with one)")
        if path.suffix == ".json":
            return without_padding(Tokenizer.from_file(str(path)))
        return BertWordPieceTokenizer(str(path), lowercase=lowercase)._tokenizer
    if source is None:
        raise ValueError("bert_tokenizer: give a tokenizer path or a corpus source to train one on")
    name = f"wordpiece-{_UNSAFE.sub('_', source)}-{vocab_size}{'' if lowercase else '-cased'}"
    cached = prep_dir() / "bert" / f"{name}.json"
    if cached.exists():
        return Tokenizer.from_file(str(cached))
    tok = train_wordpiece((s for doc in iter_documents(source, root) for s in doc), vocab_size, lowercase)
    atomic_write(cached, lambda tmp: tok.save(str(tmp)))
    return tok


# ------------------------------------------------------------ BERT pretraining: samples and masks


class Vocab(NamedTuple):
    """What sample making needs to know of a WordPiece vocabulary, as ids."""

    size: int
    cls: int
    sep: int
    mask: int
    pad: int
    continuation: tuple  # continuation[i]: token i starts with '##' (whole-word masking)

    @classmethod
    def of(cls, tokenizer):
        vocab, cont = tokenizer.get_vocab(), [False] * tokenizer.get_vocab_size()
        for token, i in vocab.items():
            cont[i] = token.startswith("##")
        ids = [vocab.get(t) for t in (CLS, SEP, MASK, WP_PAD)]
        if None in ids:
            raise ValueError(f"the tokenizer lacks one of {CLS} {SEP} {MASK} {WP_PAD}")
        return cls(tokenizer.get_vocab_size(), *ids, tuple(cont))


def truncate_pair(a, b, max_tokens, rng):
    """Trim the longer of two segments, a token at a time from its front or back at random, until
    they fit together in max_tokens (create_pretraining_data's truncate_seq_pair)."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        longer.pop(0 if rng.random() < 0.5 else -1)


def mask_tokens(ids, vocab, rng, masked_lm_prob=0.15, max_predictions=20, whole_word=False):
    """BERT's masking of one sample (create_masked_lm_predictions): candidates are all but [CLS] and [SEP] (whole
    words with whole_word), shuffled; round(len * prob) of them (at least 1, at most max_predictions) are chosen;
    each becomes [MASK] (80%), stays (10%) or a random vocabulary id (10%). -> (masked ids, sorted positions,
    original ids there)."""
    candidates = []
    for i, t in enumerate(ids):
        if t in (vocab.cls, vocab.sep):
            continue
        if whole_word and candidates and vocab.continuation[t]:
            candidates[-1].append(i)
        else:
            candidates.append([i])
    rng.shuffle(candidates)
    n_predict = min(max_predictions, max(1, int(round(len(ids) * masked_lm_prob))))
    out, chosen = list(ids), []
    for group in candidates:
        if len(chosen) >= n_predict:
            break
        if len(chosen) + len(group) > n_predict:
            continue  # a whole word that does not fit: try the next
        for i in group:
            if rng.random() < 0.8:
                out[i] = vocab.mask
            elif rng.random() >= 0.5:  # else: keep the original token
                out[i] = rng.randint(0, vocab.size - 1)
            chosen.append(i)
    chosen.sort()
    return out, chosen, [ids[i] for i in chosen]


def document_samples(documents, d, vocab, rng, max_seq_length=128, short_seq_prob=0.1):
    """The (unmasked) NSP samples of document `d` (sentences as lists of ids), with create_instances_from_document's
    semantics: a target length (max_seq_length - 3, or with probability short_seq_prob a random shorter one);
    sentences gathered up to it; segment A = a random number of the leading ones; B = the rest (label 0), or with
    probability 1/2 (always for a single sentence) text from a random other document (label 1), whose unused
    sentences go back into the stream; the longer segment trimmed at random ends. -> [(ids, token_type_ids, nsp)]."""
    document, max_tokens = documents[d], max_seq_length - 3
    target = max_tokens if rng.random() >= short_seq_prob else rng.randint(2, max_tokens)
    samples, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a, b = [t for s in chunk[:a_end] for t in s], []
            random_next = len(chunk) == 1 or rng.random() < 0.5
            if random_next:
                for _ in range(10):  # another document, if one can be found in 10 tries
                    other = rng.randint(0, len(documents) - 1)
                    if other != d:
                        break
                other = documents[other]
                for sentence in other[rng.randint(0, len(other) - 1) :]:
                    b.extend(sentence)
                    if len(b) >= target - len(a):
                        break
                i -= len(chunk) - a_end  # the sentences after A were not used: read them again
            else:
                b = [t for s in chunk[a_end:] for t in s]
            truncate_pair(a, b, max_tokens, rng)
            ids = [vocab.cls, *a, vocab.sep, *b, vocab.sep]
            samples.append((ids, [0] * (len(a) + 2) + [1] * (len(b) + 1), int(random_next)))
            chunk, length = [], 0
        i += 1
    return samples


# ---------------------------------------------------------- BERT pretraining: the sharded pipeline

_WORKER = {}  # a worker process's tokenizer (see _worker_init)


@dataclass
class PretrainingSpec:
    """How pretraining samples are made (google-research/bert's flags and defaults)."""

    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    dupe_factor: int = 10  # passes over the corpus, each with new segments and new masks
    whole_word_mask: bool = False
    static_masking: bool = True  # False: store unmasked samples, mask at load time (RoBERTa's dynamic masking)
    seed: int = 12345
    valid_every: int = 50  # every 50th document is held out (the valid split, one pass)
    shard_chars: int = 4_000_000  # a shard closes after this much text: bounds each worker's memory


def _shards(source, spec, root):
    """(split, shard index, documents) groups of raw documents, streamed from the source."""
    groups, sizes, counts = {"train": [], "valid": []}, {"train": 0, "valid": 0}, {"train": 0, "valid": 0}
    for n, doc in enumerate(iter_documents(source, root)):
        split = "valid" if spec.valid_every and n % spec.valid_every == 0 else "train"
        groups[split].append(doc)
        sizes[split] += sum(map(len, doc))
        if sizes[split] >= spec.shard_chars:
            yield split, counts[split], groups[split]
            groups[split], sizes[split], counts[split] = [], 0, counts[split] + 1
    yield from ((split, counts[split], docs) for split, docs in groups.items() if docs)


def _shard_samples(documents, tokenizer, spec, split, index):
    """The shard's samples, as create_pretraining_data makes them from one input file: documents
    tokenized and shuffled, dupe_factor passes over them, the samples shuffled."""
    rng = random.Random(f"{spec.seed}-{split}-{index}")  # independent of how many workers run
    vocab = Vocab.of(tokenizer)
    encoded = tokenizer.encode_batch_fast([s for doc in documents for s in doc], add_special_tokens=False)
    bounds = itertools.pairwise([0, *itertools.accumulate(map(len, documents))])  # each document's sentences
    # sentences -> ids; sentences that tokenize to nothing are dropped, then documents left empty
    docs = [doc for i, j in bounds if (doc := [e.ids for e in encoded[i:j] if e.ids])]
    del encoded
    rng.shuffle(docs)
    dtype = _id_dtype(max(vocab.size, spec.max_seq_length))
    samples, masking = [], (spec.masked_lm_prob, spec.max_predictions_per_seq, spec.whole_word_mask)
    for _ in range(spec.dupe_factor if split == "train" else 1):
        for d in range(len(docs)):
            for ids, types, nsp in document_samples(docs, d, vocab, rng, spec.max_seq_length, spec.short_seq_prob):
                pos, labels = [], []
                if spec.static_masking:
                    ids, pos, labels = mask_tokens(ids, vocab, rng, *masking)
                # one small array per sample (~10x less memory than Python lists): what bounds a worker
                samples.append(np.array([len(ids), types.index(1), nsp, *ids, *pos, *labels], dtype=dtype))
    rng.shuffle(samples)
    return samples


def _unpack_sample(a):
    """A packed sample -> (ids, b_start, nsp, masked positions, original ids), numpy arrays and ints."""
    n, b_start, nsp = int(a[0]), int(a[1]), int(a[2])
    m = (len(a) - 3 - n) // 2
    return a[3 : 3 + n], b_start, nsp, a[3 + n : 3 + n + m], a[3 + n + m :]


def _worker_init(tokenizer_json):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    _WORKER["tokenizer"] = Tokenizer.from_str(tokenizer_json)


def _write_shard(job):
    """Make one shard's samples and write them (JSON lines and/or binary), each file atomically."""
    documents, spec, split, index, out, formats = job
    samples = _shard_samples(documents, _WORKER["tokenizer"], spec, split, index)
    name = f"{split}-{index:05d}"
    if "jsonl" in formats:
        rows = (
            {
                "input_ids": ids.tolist(),
                "token_type_ids": [0] * b_start + [1] * (len(ids) - b_start),
                "masked_lm_positions": pos.tolist(),
                "masked_lm_labels": labels.tolist(),
                "next_sentence_label": nsp,
            }
            for ids, b_start, nsp, pos, labels in map(_unpack_sample, samples)
        )
        write_jsonl(Path(out) / f"{name}.jsonl", rows)
    if "bin" in formats:
        _write_binary(Path(out) / name, samples, _WORKER["tokenizer"].get_vocab_size())
    return split, index, len(samples), sum(int(s[0]) for s in samples)


def _write_binary(folder, samples, vocab_size):
    """A shard as .npy arrays in a folder (renamed into place when complete): all samples' token ids concatenated,
    sample offsets, where segment B starts, NSP labels, and the masked positions / original ids with their offsets."""
    dtype = _id_dtype(vocab_size)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    parts = [_unpack_sample(s) for s in samples]  # views into the packed arrays: no copies
    cat = lambda arrays, dt: np.concatenate(arrays).astype(dt) if arrays else np.zeros(0, dt)  # noqa: E731
    arrays = {
        "ids": cat([p[0] for p in parts], dtype),
        "offsets": np.cumsum([0] + [len(p[0]) for p in parts], dtype=np.int64),
        "b_start": np.array([p[1] for p in parts], dtype=np.int32),
        "nsp": np.array([p[2] for p in parts], dtype=np.uint8),
        "mlm_positions": cat([p[3] for p in parts], np.int32),
        "mlm_labels": cat([p[4] for p in parts], dtype),
        "mlm_offsets": np.cumsum([0] + [len(p[3]) for p in parts], dtype=np.int64),
    }
    for k, v in arrays.items():
        np.save(tmp / f"{k}.npy", v)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def prepare_pretraining(source, out_dir, tokenizer, spec=None, formats=("jsonl", "bin"), workers=None, root=None):
    """Raw corpus -> MLM/NSP samples in out_dir: `{split}-{k}.jsonl` and/or binary `{split}-{k}/` shards, meta.json.
    Documents stream in, cut into shards of ~spec.shard_chars of text; `workers` processes (default: all cores) write
    shards, at most two each in flight: memory stays bounded whatever the corpus size. A rerun keeps finished shards
    (resumable); the output is independent of the worker count. The tokenizer's padding/truncation is not used."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    spec = spec or PretrainingSpec()
    tokenizer = without_padding(tokenizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    settings = {"source": source, "spec": asdict(spec), "formats": list(formats)}
    settings["tokenizer"] = tokenizer_hash(tokenizer)
    if meta_path.exists() and json.loads(meta_path.read_text()).get("settings") != settings:
        raise ValueError(f"--out {out} holds data made with another tokenizer or other settings; choose another --out")
    atomic_write(out / "tokenizer.json", lambda tmp: tokenizer.save(str(tmp)))
    workers = workers or os.cpu_count()
    stats, pending = [], set()

    def done(split, k):
        jsonl, binary = out / f"{split}-{k:05d}.jsonl", out / f"{split}-{k:05d}"
        return ("jsonl" not in formats or jsonl.exists()) and ("bin" not in formats or binary.is_dir())

    with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(tokenizer.to_str(),)) as pool:
        for split, k, documents in _shards(source, spec, root):
            if done(split, k):
                stats.append(_shard_stats(out, split, k, formats))
                continue
            if len(pending) >= 2 * workers:  # back-pressure: never more than this many shards in memory
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                stats += [f.result() for f in finished]
            pending.add(pool.submit(_write_shard, (documents, spec, split, k, str(out), tuple(formats))))
        stats += [f.result() for f in wait(pending).done]
    shards = {s: sorted(k for split, k, _, _ in stats if split == s) for s in ("train", "valid")}
    total = lambda i: {s: sum(st[i] for st in stats if st[0] == s) for s in shards}  # i: 2 samples, 3 tokens
    meta = {"kind": "bert", "settings": settings, "vocab_size": tokenizer.get_vocab_size(), "shards": shards}
    meta |= {"samples": total(2), "tokens": total(3)}
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return meta


def tokenizer_hash(tokenizer):
    """What identifies an HF tokenizer: the sha256 of its JSON (its vocabulary, normalizer, ...)."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def read_meta(folder, kind):
    """A prepared folder's meta.json, checked to be of `kind` ("bert": `data.py bert`, "lm": `data.py lm`)."""
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"--dataset {folder}: no meta.json; prepare the data first (python data.py {kind} ...)")
    meta = json.loads(path.read_text())
    made = meta.get("kind", "bert" if "settings" in meta else "lm")  # folders made before "kind" was recorded
    if made != kind:
        raise ValueError(f"--dataset {folder} was made by `data.py {made}`; this run needs one of `data.py {kind}`")
    return meta


def _shard_stats(out, split, k, formats):
    """(split, k, samples, tokens) of a finished shard, read back from its files."""
    if "bin" in formats:
        offsets = np.load(out / f"{split}-{k:05d}" / "offsets.npy")
        return split, k, len(offsets) - 1, int(offsets[-1])
    with open(out / f"{split}-{k:05d}.jsonl") as f:
        lengths = [len(json.loads(line)["input_ids"]) for line in f]
    return split, k, len(lengths), sum(lengths)


class PretrainingData:
    """The binary shards of one split of a prepared folder, memory-mapped: random access to
    samples without loading the corpus. data[i] -> (ids, b_start, nsp, mlm_positions, mlm_labels)."""

    def __init__(self, folder, split="train"):
        folder = Path(folder)
        self.meta = read_meta(folder, "bert")
        if "bin" not in (formats := self.meta["settings"]["formats"]):
            raise ValueError(f"{folder} has no binary shards (prepared with formats {formats})")
        self.spec = PretrainingSpec(**self.meta["settings"]["spec"])
        paths = [folder / f"{split}-{k:05d}" for k in self.meta["shards"][split]]
        self.shards = [{f.stem: np.load(f, mmap_mode="r") for f in path.glob("*.npy")} for path in paths]
        self.starts = np.cumsum([0] + [len(s["offsets"]) - 1 for s in self.shards])

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} outside [0, {len(self)})")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        s, j = self.shards[k], i - int(self.starts[k])
        ids = s["ids"][s["offsets"][j] : s["offsets"][j + 1]].astype(np.int64)
        m0, m1 = s["mlm_offsets"][j], s["mlm_offsets"][j + 1]
        return ids, int(s["b_start"][j]), int(s["nsp"][j]), s["mlm_positions"][m0:m1], s["mlm_labels"][m0:m1]

    def batch(self, indices, vocab, key, mask_prob=0.0, max_predictions=0):
        """Samples -> a batch (collate_pretraining). Samples stored unmasked get masks drawn by a
        generator seeded by f"{key}-{index}" (key: seed and epoch, so that dynamic masks change per
        epoch and repeat after a resume); with mask_prob, every sample is unmasked (its labels put
        back) and masked again at that rate, at most max_predictions (0: as many as the rate gives)."""
        s, samples = self.spec, [self[i] for i in indices]
        prob = mask_prob or s.masked_lm_prob
        most = (max_predictions or s.max_seq_length) if mask_prob else s.max_predictions_per_seq
        for k, (i, (ids, b_start, nsp, positions, labels)) in enumerate(zip(indices, samples, strict=True)):
            if len(positions) == 0 or mask_prob:
                ids = ids.tolist()
                for p, label in zip(positions, labels, strict=True):
                    ids[p] = int(label)
                ids, positions, labels = mask_tokens(
                    ids, vocab, random.Random(f"{key}-{i}"), prob, most, s.whole_word_mask
                )
                samples[k] = (ids, b_start, nsp, positions, labels)
        return collate_pretraining(samples, vocab.pad)


def collate_pretraining(samples, pad_id=0):
    """Samples (PretrainingData items) -> right-padded batch tensors in HF's names: input_ids, attention_mask,
    token_type_ids, labels (the original id at masked positions, -100 elsewhere) and next_sentence_label."""
    B, T = len(samples), max(len(s[0]) for s in samples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    for r, (ids, b_start, _, positions, originals) in enumerate(samples):
        n = len(ids)
        input_ids[r, :n] = torch.as_tensor(ids)
        attention_mask[r, :n] = 1
        token_type_ids[r, b_start:n] = 1
        positions = torch.from_numpy(np.array(positions, dtype=np.int64))
        labels[r, positions] = torch.from_numpy(np.array(originals, dtype=np.int64))
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels)
    batch["next_sentence_label"] = torch.tensor([s[2] for s in samples], dtype=torch.long)
    return batch


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
    included), trained with HF tokenizers on the source, or an HF tokenizer.json file."""
    if kind == "char":
        return CharTokenizer(sorted(set("".join(_lm_texts(source, root)))))
    if kind in ("gpt2", "cl100k_base", "r50k_base", "o200k_base"):
        return TiktokenTokenizer(kind)
    if kind.endswith(".json"):  # a trained one, e.g. a translation task's: data.py lm then shares its ids
        return HFBPETokenizer(tokenizer_file(kind))
    for name, cls in (("bpe", HFBPETokenizer), ("unigram", HFUnigramTokenizer), ("bart-bpe", subword.HFBartTokenizer)):
        if kind.startswith(name) and kind[len(name) :].isdigit():
            return cls.train(_lm_texts(source, root), int(kind[len(name) :]))
    raise ValueError(f"tokenizer must be char, gpt2, cl100k_base, bpe<N>, bart-bpe<N>, unigram<N>, got {kind!r}")


def prepare_lm(source, tokenizer="char", out_dir=None, val_fraction=0.1, root=None):
    """Write out_dir/{train,val}.bin (token ids, uint16 when the vocabulary fits, else uint32) and meta.json
    (tokenizer, vocabulary, counts). A single text (Tiny Shakespeare) is split as nanoGPT does: the first 90% of
    its characters train, the rest validate; a corpus of documents sends every round(1 / val_fraction)-th document
    to validation, documents ending with the end-of-text token when the tokenizer has one. Documents stream to disk."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    tok = lm_tokenizer(tokenizer, source, root)
    out = Path(out_dir or prep_dir() / _UNSAFE.sub("_", f"lm-{source}-{Path(tokenizer).stem}"))
    out.mkdir(parents=True, exist_ok=True)
    dtype, counts = _id_dtype(tok.vocab_size), {"train": 0, "val": 0}
    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(open(out / f"{s}.bin.tmp", "wb")) for s in counts}

        def write(split, ids):
            np.asarray(ids, dtype=dtype).tofile(files[split])
            counts[split] += len(ids)

        if source == "shakespeare" or source.endswith(".txt"):  # one text: nanoGPT's split by characters
            text = next(_lm_texts(source, root))
            cut = int(len(text) * (1 - val_fraction))
            write("train", tok.encode(text[:cut]))
            write("val", tok.encode(text[cut:]))
        else:
            every = max(1, round(1 / val_fraction))
            for n, text in enumerate(_lm_texts(source, root)):
                ids = tok.encode(text) + ([tok.eot] if tok.eot is not None else [])
                write("val" if n % every == every - 1 else "train", ids)
    for split in counts:  # the folder's files are replaced only when there is text to train on
        tmp = out / f"{split}.bin.tmp"
        os.replace(tmp, out / f"{split}.bin") if counts["train"] else tmp.unlink()
    if not counts["train"]:
        raise ValueError(f"--source {source}: no text to train on (0 tokens)")
    meta = dict(kind="lm", source=source, tokenizer=tokenizer, vocab_size=tok.vocab_size, dtype=dtype.__name__)
    meta.update(tokens=counts, **({"chars": tok.chars} if isinstance(tok, CharTokenizer) else {}))
    if isinstance(tok, HFBPETokenizer):
        tok.tok.save(str(out / "tokenizer.json"))
    atomic_write(out / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return out


def load_lm(folder):
    """A prepared folder -> (meta, tokenizer, {"train": memmap, "val": memmap})."""
    folder = Path(folder)
    meta = read_meta(folder, "lm")
    if meta["tokenizer"] == "char":
        tok = CharTokenizer(meta["chars"])
    elif (folder / "tokenizer.json").exists():
        cls = HFUnigramTokenizer if meta["tokenizer"].startswith("unigram") else HFBPETokenizer
        tok = cls(Tokenizer.from_file(str(folder / "tokenizer.json")))
    else:
        tok = TiktokenTokenizer(meta["tokenizer"])
    splits = {s: np.memmap(folder / f"{s}.bin", dtype=meta["dtype"], mode="r") for s in ("train", "val")}
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
    import resource
    import time

    p = argparse.ArgumentParser(description="Prepare BERT pretraining data (MLM + NSP).")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bert", help="raw text -> WordPiece -> truncated samples -> MLM/NSP JSON lines + binary")
    b.add_argument("--source", default="books+wiki", help="books, wiki, books+wiki, a .txt path, hf:<dataset>")
    b.add_argument("--out", required=True)
    b.add_argument("--tokenizer", default=None, help="tokenizer.json / vocab.txt / HF folder; default: train one")
    b.add_argument("--vocab-size", type=int, default=30522)
    b.add_argument("--cased", action="store_true")
    b.add_argument("--formats", default="jsonl,bin")
    b.add_argument("--workers", type=int, default=None)
    for f in fields(PretrainingSpec):
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(f.default, bool) else {"type": type(f.default)}
        b.add_argument("--" + f.name.replace("_", "-"), default=f.default, **kind)
    lm = sub.add_parser("lm", help="text -> token ids in train.bin / val.bin (GPT training data)")
    lm.add_argument("--source", default="shakespeare", help="shakespeare, books, wiki, books+wiki, a .txt, hf:<name>")
    lm.add_argument("--tokenizer", default="char", help="char, gpt2, cl100k_base, (bart-)bpe<N>, unigram<N>, .json")
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
    spec = PretrainingSpec(**{f.name: getattr(a, f.name) for f in fields(PretrainingSpec)})
    t0 = time.time()
    tok = bert_tokenizer(a.tokenizer, a.source, a.vocab_size, lowercase=not a.cased)
    t1 = time.time()
    meta = prepare_pretraining(a.source, a.out, tok, spec, tuple(a.formats.split(",")), a.workers)
    t2 = time.time()
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)  # peak RSS: this process, its largest worker
    main_rss, worker_rss = (resource.getrusage(w).ru_maxrss / 1024 for w in who)
    workers, n = a.workers or os.cpu_count(), meta["samples"]["train"] + meta["samples"]["valid"]
    report = {k: meta[k] for k in ("samples", "tokens", "vocab_size")} | {"tokenizer_s": round(t1 - t0, 1)}
    report |= {"samples_s": round(t2 - t1, 1), "samples_per_s": round(n / max(t2 - t1, 1e-9))}
    report["peak_rss_mib"] = {"main": round(main_rss), "largest_worker": round(worker_rss), "workers": workers}
    report["peak_rss_mib_bound"] = round(main_rss + workers * worker_rss)  # all processes at their peaks at once
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
