"""Masked-LM pretraining data (BERT, RoBERTa; ALBERT and UniLM next): the seed's stages, raw text -> documents of
sentences (data.iter_documents) -> WordPiece ids -> truncated samples ([CLS] A [SEP] B [SEP], google-research/bert's
create_pretraining_data semantics) -> MLM/NSP training data, written as JSON lines (readable) and as binary shards
(uint16/uint32 .npy, memory-mapped by train.py). Sharded, parallel and resumable:

    python data.py bert --source books+wiki --out DIR [--whole-word-mask --no-static-masking ...]
"""

import itertools
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import subword
from data import (
    UNSAFE_CHARS,
    check_output,
    id_dtype,
    iter_documents,
    prep_dir,
    read_meta,
    read_tokenizer,
    source_stamp,
    tokenizer_hash,
    write_jsonl,
)
from hf_checkpoint import atomic_write
from subword import without_padding

CLS, SEP, MASK, WP_PAD, WP_UNK = "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"
WORDPIECE_SPECIALS = [WP_PAD, WP_UNK, CLS, SEP, MASK]


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


def checkpoint_tokenizer(folder):
    """An HF checkpoint folder's tokenizer: its tokenizer.json, or its vocab.txt (lowercased unless its
    tokenizer_config.json says do_lower_case false); no padding, no truncation."""
    folder, config = Path(folder), Path(folder) / "tokenizer_config.json"
    lower = json.loads(config.read_text()).get("do_lower_case", True) if config.exists() else True
    if not any((folder / n).exists() for n in ("tokenizer.json", "vocab.txt")):
        raise FileNotFoundError(f"{folder} has no tokenizer.json or vocab.txt")
    return bert_tokenizer(folder, lowercase=lower)


def bert_tokenizer(path=None, source=None, vocab_size=30522, lowercase=True, root=None):
    """A WordPiece tokenizer: loaded from `path` (a tokenizer.json or vocab.txt file, or a folder holding one, like an
    HF checkpoint; padding and truncation switched off, see without_padding), or trained on the corpus `source`
    (see iter_documents), cached in $PREP_DIR/bert/ and reused: by HF's WordPieceTrainer, or with `path`
    "our-wordpiece<N>" by ours (subword.train_wordpiece, N tokens; HF reads its file)."""
    from tokenizers.implementations import BertWordPieceTokenizer

    ours = path is not None and re.fullmatch(r"our-wordpiece(\d+)", str(path))
    if ours:
        path, vocab_size = None, int(ours[1])
    if path is not None:
        path = Path(path)
        if path.is_dir():
            path = next((path / n for n in ("tokenizer.json", "vocab.txt") if (path / n).exists()), path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer: {path} is not a tokenizer.json or vocab.txt (or a folder with one)")
        if path.suffix == ".json":
            return without_padding(read_tokenizer(path))
        return BertWordPieceTokenizer(str(path), lowercase=lowercase)._tokenizer
    if source is None:
        raise ValueError("bert_tokenizer: give a tokenizer path or a corpus source to train one on")
    if vocab_size <= len(WORDPIECE_SPECIALS):
        raise ValueError(f"--vocab-size must exceed the {len(WORDPIECE_SPECIALS)} specials, got {vocab_size}")
    name = (
        f"{'our-' if ours else ''}wordpiece-{UNSAFE_CHARS.sub('_', source)}-{vocab_size}{'' if lowercase else '-cased'}"
    )
    cached = prep_dir() / "bert" / f"{name}-{source_stamp(source, root)}.json"  # a corpus edited: trained again
    if cached.exists():
        return read_tokenizer(cached, "the cached tokenizer")
    texts = (s for doc in iter_documents(source, root) for s in doc)
    if ours:
        cached.parent.mkdir(parents=True, exist_ok=True)
        subword.train_wordpiece(texts, vocab_size, lowercase=lowercase).save(cached)  # written aside, moved in
        return read_tokenizer(cached, "our tokenizer")
    tok = train_wordpiece(texts, vocab_size, lowercase)
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


def mask_tokens(ids, vocab, rng, masked_lm_prob=0.15, max_predictions=20, whole_word=False, ngram=1, spans=None):
    """BERT's masking of one sample (create_masked_lm_predictions): candidates are all but [CLS] and [SEP] (whole
    words with whole_word), shuffled; round(len * prob) of them (at least 1, at most max_predictions) are chosen;
    each becomes [MASK] (80%), stays (10%) or a random vocabulary id (10%). -> (masked ids, sorted positions,
    original ids there). ngram > 1: ALBERT's n-gram masking (google-research/albert's create_pretraining_data):
    shuffled starts, each taking n consecutive candidates with p(n) proportional to 1/n (n <= ngram; shorter when
    it would exceed the budget; skipped when it overlaps a chosen one). `spans`: a list that receives each chosen
    group of positions (for inspection)."""
    candidates = []
    for i, t in enumerate(ids):
        if t in (vocab.cls, vocab.sep):
            continue
        if whole_word and candidates and vocab.continuation[t]:
            candidates[-1].append(i)
        else:
            candidates.append([i])
    order = list(range(len(candidates))) if ngram > 1 else candidates  # n-gram starts, or the candidates
    rng.shuffle(order)
    n_predict = min(max_predictions, max(1, int(round(len(ids) * masked_lm_prob))))
    out, chosen, weights = list(ids), [], [1 / n for n in range(1, ngram + 1)]
    for group in order:
        if len(chosen) >= n_predict:
            break
        if ngram > 1:  # `group` is a start: n candidates from it, shortened while they exceed the budget
            n = rng.choices(range(1, ngram + 1), weights)[0]
            while n > 1 and len(chosen) + sum(map(len, candidates[group : group + n])) > n_predict:
                n -= 1
            group = [i for c in candidates[group : group + n] for i in c]
            if not set(group).isdisjoint(chosen):
                continue
        if len(chosen) + len(group) > n_predict:
            continue  # a whole word that does not fit: try the next
        if spans is not None:
            spans.append(group)
        for i in group:
            if rng.random() < 0.8:
                out[i] = vocab.mask
            elif rng.random() >= 0.5:  # else: keep the original token
                out[i] = rng.randint(0, vocab.size - 1)
            chosen.append(i)
    chosen.sort()
    return out, chosen, [ids[i] for i in chosen]


def document_samples(documents, d, vocab, rng, max_seq_length=128, short_seq_prob=0.1, pair="nsp"):
    """The (unmasked) NSP samples of document `d` (sentences as lists of ids), with create_instances_from_document's
    semantics: a target length (max_seq_length - 3, or with probability short_seq_prob a random shorter one);
    sentences gathered up to it; segment A = a random number of the leading ones; B = the rest (label 0), or with
    probability 1/2 (always for a single sentence) text from a random other document (label 1), whose unused
    sentences go back into the stream; the longer segment trimmed at random ends. -> [(ids, token_type_ids, label)].
    pair="sop": ALBERT's sentence-order pairs instead: with probability 1/2, A and B swapped (label 1); a
    single-sentence chunk still takes B from another document (label 1), as ALBERT's code does."""
    document, max_tokens = documents[d], max_seq_length - 3
    target = max_tokens if rng.random() >= short_seq_prob else rng.randint(2, max_tokens)
    samples, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a, b = [t for s in chunk[:a_end] for t in s], []
            random_next = len(chunk) == 1 or (pair == "nsp" and rng.random() < 0.5)
            swapped = not random_next and pair == "sop" and rng.random() < 0.5
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
                a, b = (b, a) if swapped else (a, b)
            truncate_pair(a, b, max_tokens, rng)
            ids = [vocab.cls, *a, vocab.sep, *b, vocab.sep]
            samples.append((ids, [0] * (len(a) + 2) + [1] * (len(b) + 1), int(random_next or swapped)))
            chunk, length = [], 0
        i += 1
    return samples


# ---------------------------------------------------------- BERT pretraining: the sharded pipeline

_WORKER = {}  # a worker process's tokenizer (see _worker_init)
OURS = ("tokenizer.json", "train-*", "valid-*")  # what a folder of `data.py bert` holds beside meta.json


@dataclass
class PretrainingSpec:
    """How pretraining samples are made (google-research/bert's flags and defaults)."""

    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    dupe_factor: int = 10  # passes over the corpus, each with new segments and new masks
    whole_word_mask: bool = False
    ngram: int = 1  # masked spans of up to n candidates, p(n) ~ 1/n (ALBERT: 3); 1: BERT's single tokens
    pair_task: str = "nsp"  # nsp: B follows A or is random (BERT); sop: B follows A or A, B swapped (ALBERT)
    static_masking: bool = True  # False: store unmasked samples, mask at load time (RoBERTa's dynamic masking)
    seed: int = 12345
    valid_every: int = 50  # every 50th document is held out (the valid split, one pass)
    shard_chars: int = 4_000_000  # a shard closes after this much text: bounds each worker's memory

    def __post_init__(self):  # each flag of `data.py bert` checked before any work, named
        checks = [
            ("max_seq_length", self.max_seq_length >= 5, ">= 5 ([CLS] A [SEP] B [SEP])"),
            ("short_seq_prob", 0 <= self.short_seq_prob <= 1, "in [0, 1]"),
            ("masked_lm_prob", 0 < self.masked_lm_prob <= 1, "in (0, 1]"),
            ("max_predictions_per_seq", self.max_predictions_per_seq >= 1, ">= 1"),
            ("dupe_factor", self.dupe_factor >= 1, ">= 1"),
            ("ngram", self.ngram >= 1, ">= 1"),
            ("pair_task", self.pair_task in ("nsp", "sop"), "nsp or sop"),
            ("valid_every", self.valid_every >= 0, ">= 0 (0: no valid split)"),
            ("shard_chars", self.shard_chars >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {expected}, got {getattr(self, name)!r}")


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
    dtype = id_dtype(max(vocab.size, spec.max_seq_length))
    samples, masking = [], (spec.masked_lm_prob, spec.max_predictions_per_seq, spec.whole_word_mask, spec.ngram)
    shape = (spec.max_seq_length, spec.short_seq_prob, spec.pair_task)
    for _ in range(spec.dupe_factor if split == "train" else 1):
        for d in range(len(docs)):
            for ids, types, nsp in document_samples(docs, d, vocab, rng, *shape):
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
    dtype = id_dtype(vocab_size)
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
    out, meta_path = Path(out_dir), Path(out_dir) / "meta.json"
    settings = {"source": source, "spec": asdict(spec), "formats": list(formats)}
    settings["tokenizer"] = tokenizer_hash(tokenizer)
    check_output(out, "bert", settings, OURS)
    out.mkdir(parents=True, exist_ok=True)
    if not meta_path.exists():  # unfinished until the end: a rerun with other settings cannot mix into its shards
        unfinished = {"kind": "bert", "settings": settings, "finished": False}
        atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(unfinished, indent=1)))
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


def _shard_stats(out, split, k, formats):
    """(split, k, samples, tokens) of a finished shard, read back from its files."""
    if "bin" in formats:
        offsets = np.load(out / f"{split}-{k:05d}" / "offsets.npy")
        return split, k, len(offsets) - 1, int(offsets[-1])
    with open(out / f"{split}-{k:05d}.jsonl") as f:
        lengths = [len(json.loads(line)["input_ids"]) for line in f]
    return split, k, len(lengths), sum(lengths)


def _open_shard(path, vocab_size):
    """A binary shard's arrays, memory-mapped and checked in O(1) (sizes agree, a sample of 4,096 ids fits the
    vocabulary); a missing, damaged or object-holding file is named (objects are never unpickled)."""
    shard = {}
    for name in ("ids", "offsets", "b_start", "nsp", "mlm_positions", "mlm_labels", "mlm_offsets"):
        try:
            a = shard[name] = np.load(path / f"{name}.npy", mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"--dataset: {path / name}.npy is not an array of `data.py bert` ({e})") from None
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise ValueError(f"--dataset: {path / name}.npy holds {a.dtype} of {a.ndim} dimensions, not integer ids")
    if not len(shard["offsets"]) or not len(shard["mlm_offsets"]):
        raise ValueError(f"--dataset: shard {path} has empty offsets (a damaged shard)")
    n, ids = len(shard["offsets"]) - 1, shard["ids"]
    sizes = (n, len(shard["b_start"]), len(shard["nsp"]), len(shard["mlm_offsets"]) - 1)
    ends = (int(shard["offsets"][-1]), len(ids), int(shard["mlm_offsets"][-1]), len(shard["mlm_positions"]))
    if len(set(sizes)) > 1 or ends[0] != ends[1] or len({*ends[2:], len(shard["mlm_labels"])}) > 1:
        raise ValueError(f"--dataset: the arrays of shard {path} disagree in size (a damaged or mixed shard)")
    if len(ids) and int(ids[:: max(1, len(ids) // 4096)].max()) >= vocab_size:
        raise ValueError(f"--dataset: shard {path} holds ids beyond the vocabulary ({vocab_size})")
    return shard


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
        self.shards = [_open_shard(path, self.meta["vocab_size"]) for path in paths]
        self.starts = np.cumsum([0] + [len(s["offsets"]) - 1 for s in self.shards])
        if len(self) != self.meta["samples"][split]:
            raise ValueError(
                f"--dataset {folder}: its {split} shards hold {len(self)} samples, meta.json records "
                f"{self.meta['samples'][split]}"
            )

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
                    ids, vocab, random.Random(f"{key}-{i}"), prob, most, s.whole_word_mask, s.ngram
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


# ------------------------------------------------------------------------ the command line: data.py bert


def add_arguments(b):
    """The options of `python data.py bert` (data.py's command line), PretrainingSpec's fields among them."""
    import argparse

    b.add_argument("--source", default="books+wiki", help="books, wiki, books+wiki, a .txt path, hf:<dataset>")
    b.add_argument("--out", required=True)
    b.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json / vocab.txt / HF folder, or our-wordpiece<N> (ours); default: train HF's",
    )
    b.add_argument("--vocab-size", type=int, default=30522)
    b.add_argument("--cased", action="store_true")
    b.add_argument("--formats", default="jsonl,bin")
    b.add_argument("--workers", type=int, default=None)
    for f in fields(PretrainingSpec):
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(f.default, bool) else {"type": type(f.default)}
        b.add_argument("--" + f.name.replace("_", "-"), default=f.default, **kind)


def main(a):
    """`python data.py bert`: the tokenizer (loaded or trained), the data, then a report of its
    size, speed and peak memory."""
    import resource
    import time

    spec = PretrainingSpec(**{f.name: getattr(a, f.name) for f in fields(PretrainingSpec)})
    check_output(a.out, "bert", None, OURS)  # before the tokenizer is trained; its settings are checked after
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
