"""The tokenizers study's parity runs (python studies/_tokenizer_parity.py FOLDER KIND [VOCAB]): one of our
trainers (subword.py; KIND bpe, wordpiece, unigram or unigram-as-hf) and its reference trained on the books
at VOCAB (8,000) with the same settings, compared on WikiText-2 test (every line): vocabulary (and merges)
equal or overlapping, ids equal or tokens per byte, training and encoding time beside HF's (Rust; and the
sentencepiece package's for unigram). Writes FOLDER/results.json and FOLDER/tokenizer.json (ours)."""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's modules

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

import data  # noqa: E402
import subword  # noqa: E402


def timed(f, *args):
    t = time.perf_counter()
    out = f(*args)
    return out, round(time.perf_counter() - t, 2)


def hf_trained(kind, texts, vocab):
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab, min_frequency=2, special_tokens=["<|endoftext|>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )  # fmt: skip
    elif kind == "wordpiece":
        from tokenizers import normalizers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer = (
            normalizers.BertNormalizer(lowercase=True),
            pre_tokenizers.BertPreTokenizer(),
        )
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab, special_tokens=list(subword.WORDPIECE_SPECIALS), show_progress=False
        )
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab, special_tokens=["<unk>", "</s>"], unk_token="<unk>", show_progress=False
        )
    tok.train_from_iterator(texts, trainer)
    return tok


def ours_trained(kind, texts, vocab):
    if kind == "unigram-as-hf":
        return subword.with_eot(subword.train_unigram(texts, vocab, special_tokens=["<unk>", "</s>"], as_hf=True))
    return subword.train(kind, texts, vocab)


def spm_trained(texts, vocab):  # the sentencepiece package, set as HF's trainer is: no normalization, no splits
    import io

    import sentencepiece as spm

    lines = [line for t in texts for line in t.split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="unigram", vocab_size=vocab,
        normalization_rule_name="identity", character_coverage=1.0, split_by_unicode_script=False,
        split_by_number=False, max_sentencepiece_length=16, bos_id=-1, eos_id=1, pad_id=-1, unk_id=0,
        input_sentence_size=0, hard_vocab_limit=False, minloglevel=2, num_threads=1,
    )  # fmt: skip
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def main(folder, kind, vocab=8000):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = list(data._lm_texts("books"))
    lines = Path(os.environ.get("DATA_DIR", "data"), "wikitext-2/wiki.test.tokens").read_text().splitlines()
    ours, t_ours = timed(ours_trained, kind, texts, vocab)
    ref, t_ref = timed(hf_trained, kind.removesuffix("-as-hf"), texts, vocab)
    ours.save(folder / "tokenizer.json")
    mine, theirs = set(ours.vocab), set(ref.get_vocab())
    out = {"kind": kind, "vocab_size": vocab, "books_bytes": sum(len(t.encode()) for t in texts)}
    out |= {"train_s": t_ours, "hf_train_s": t_ref, "ours": len(mine), "hf": len(theirs)}
    out["overlap_hf"] = round(len(mine & theirs) / len(theirs), 4)
    ids, t_enc = timed(lambda: [ours.encode(x) for x in lines])
    hf_ids, t_hf_enc = timed(lambda: [e.ids for e in ref.encode_batch(lines)])
    nbytes = sum(len(x.encode()) for x in lines)
    out |= {"test_lines": len(lines), "encode_s": t_enc, "hf_encode_s": t_hf_enc}
    out |= {"tokens_per_byte": sum(map(len, ids)) / nbytes, "hf_tokens_per_byte": sum(map(len, hf_ids)) / nbytes}
    loaded = Tokenizer.from_file(str(folder / "tokenizer.json"))
    out["hf_loads_ours_same_ids"] = all(a == e.ids for a, e in zip(ids, loaded.encode_batch(lines), strict=True))
    if kind == "bpe":
        hf_model = json.loads(ref.to_str())["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in hf_model["merges"]]
        out["same_vocab_and_merges"] = ours.vocab == hf_model["vocab"] and ours.merges == merges
        out["same_ids_every_line"] = ids == hf_ids
    if kind.startswith("unigram"):
        import importlib.util

        if importlib.util.find_spec("sentencepiece"):
            sp, t_spm = timed(spm_trained, texts, vocab)
            pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
            spm_ids = [sp.encode(x) for x in lines]
            out |= {"spm_train_s": t_spm, "overlap_spm": round(len(mine & pieces) / len(pieces), 4)}
            out["hf_overlap_spm"] = round(len(theirs & pieces) / len(pieces), 4)  # the two references apart
            out["spm_tokens_per_byte"] = sum(map(len, spm_ids)) / nbytes
    (folder / "results.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(v) for v in sys.argv[3:]))
