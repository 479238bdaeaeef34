"""subword.py's own byte-level BPE trainer (issue 22) against HF `tokenizers`' BpeTrainer: the same
vocabulary and merges, the same ids, a tokenizer.json HF loads, round trips, and bad input."""

import json

import pytest
from conftest import require
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import subword

pytestmark = require("tinyshakespeare/input.txt")


def corpus(n=3000):
    import os

    path = os.path.join(os.environ.get("DATA_DIR", "data"), "tinyshakespeare/input.txt")
    return open(path, encoding="utf-8").read().split("\n")[:n]


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
