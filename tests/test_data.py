"""data.py: readers, the joint tokenizer, token batches, collation."""

import pytest
import torch
from conftest import require

import data

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
