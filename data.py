"""Data: raw text -> tokenizers -> token ids -> batches. Imports no model.

Translation (this part): Multi30k and IWSLT14 readers, a joint subword vocabulary trained with HF
`tokenizers` on the training split only, length filtering, and batching by token count.

Raw data lives in a data directory: $DATA_DIR (default ./data), in the standard layouts
(`multi30k/{train,val,test_2016_flickr}.{de,en}`, `iwslt14/tokenized-lc/{train,valid,test}.{de,en}`).
Prepared files (tokenizers, ...) go to $PREP_DIR (default ./data/prepared), so DATA_DIR may be
read-only.
"""

import json
import os
import random
from pathlib import Path

import torch

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3: the defaults of transformer.TransformerConfig


def data_dir():
    return Path(os.environ.get("DATA_DIR", "data"))


def prep_dir():
    return Path(os.environ.get("PREP_DIR", "data/prepared"))


# ------------------------------------------------------------------------------- raw corpora

TRANSLATION_SPLITS = {
    "multi30k": {"train": "train", "valid": "val", "test": "test_2016_flickr"},
    "iwslt14": {"train": "train", "valid": "valid", "test": "test"},
}


def read_parallel(dataset, split, src_lang="de", tgt_lang="en", root=None):
    """-> list of (source sentence, target sentence) for a translation dataset and split.

    Multi30k: `<DATA_DIR>/multi30k/{train,val,test_2016_flickr}.{de,en}` (raw text), or online
    the HF dataset `bentrevett/multi30k`. IWSLT14: fairseq's prepare-iwslt14.sh output,
    `<DATA_DIR>/iwslt14/tokenized-lc/{train,valid,test}.{de,en}` (tokenized, lowercased)."""
    if dataset not in TRANSLATION_SPLITS:
        raise ValueError(f"dataset must be one of {sorted(TRANSLATION_SPLITS)}, got {dataset!r}")
    if split not in TRANSLATION_SPLITS[dataset]:
        raise ValueError(f"split must be one of {sorted(TRANSLATION_SPLITS[dataset])}, got {split!r}")
    root = Path(root) if root is not None else data_dir()
    folder = root / dataset if dataset == "multi30k" else root / "iwslt14" / "tokenized-lc"
    name = TRANSLATION_SPLITS[dataset][split]
    paths = [folder / f"{name}.{lang}" for lang in (src_lang, tgt_lang)]
    if all(p.exists() for p in paths):
        src, tgt = (p.read_text(encoding="utf-8").rstrip("\n").split("\n") for p in paths)
        if len(src) != len(tgt):
            raise ValueError(f"{paths[0]} and {paths[1]} have {len(src)} and {len(tgt)} lines: not parallel")
        return list(zip(src, tgt, strict=True))
    if dataset == "multi30k":
        try:
            return _multi30k_from_hub(split, src_lang, tgt_lang)
        except Exception as e:  # offline, or datasets missing
            hub_error = f" (and the HF hub copy failed: {type(e).__name__})"
    else:
        hub_error = ""
    missing = ", ".join(str(p) for p in paths if not p.exists())
    raise FileNotFoundError(
        f"{dataset} {split}: missing {missing}{hub_error}. Put the files there (set DATA_DIR to the folder "
        f"holding {dataset if dataset == 'multi30k' else 'iwslt14/tokenized-lc'}/), one sentence per line."
    )


def _multi30k_from_hub(split, src_lang, tgt_lang):
    from datasets import load_dataset

    hub_split = {"train": "train", "valid": "validation", "test": "test"}[split]
    ds = load_dataset("bentrevett/multi30k", split=hub_split)
    return [(row[src_lang], row[tgt_lang]) for row in ds]


# --------------------------------------------------------------------------------- tokenizers


def train_subword_tokenizer(texts, vocab_size=8000, kind="bpe"):
    """A subword tokenizer (BPE or unigram) over whitespace-marked pieces (SentencePiece style:
    '▁' marks a word start), so decoding gives back the original spacing: detokenized text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, unk_token=UNK, show_progress=False
        )
    else:
        raise ValueError(f"kind must be 'bpe' or 'unigram', got {kind!r}")
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainer)
    return tok


def translation_tokenizer(dataset, src_lang="de", tgt_lang="en", vocab_size=8000, kind="bpe", root=None):
    """The joint source+target tokenizer of a dataset, trained on its train split only, saved to
    $PREP_DIR/<dataset>/ and reused (both directions share it)."""
    from tokenizers import Tokenizer

    langs = "-".join(sorted((src_lang, tgt_lang)))
    path = prep_dir() / dataset / f"tokenizer-{langs}-{kind}{vocab_size}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    pairs = read_parallel(dataset, "train", src_lang, tgt_lang, root)
    tok = train_subword_tokenizer([s for pair in pairs for s in pair], vocab_size, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)  # atomic: a crash never leaves half a tokenizer
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
    """Batches of example indices with at most `max_tokens` tokens each, counting padding
    (batch size x longest example): sort by length (ties broken at random), cut into batches,
    shuffle the batches. Deterministic in (seed, epoch), so a run can resume mid-epoch."""
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

    labels = pad([t for _, t in examples])
    tgt_in = pad([[bos_id] + t[:-1] for _, t in examples])
    return pad([s for s, _ in examples]), tgt_in, labels


def write_jsonl(path, rows):
    """Rows of JSON, one per line, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
