"""Translation's evaluation, shared by the translation tasks (the paper's model, T5's and BART's):
sentences decoded in length-sorted batches, and BLEU twice (sacreBLEU's standard score, and the
lowercased spaCy-tokenized score that the pytorch-seq2seq tutorial reports)."""

import torch

import data


@torch.no_grad()
def translate(tok, sentences, generate, pad_id, prefix=(), batch_size=128, progress=None):
    """Sentences (each after `prefix` ids) -> detokenized translations, in order, batched by length for
    speed: generate(src (B, S)) gives each row's tokens, decoded up to the first EOS. progress: a
    bar's title (a bar over the sentences)."""
    from tqdm import tqdm

    eos = tok.token_to_id(data.EOS)
    ids = [[*prefix, *e.ids, eos] for e in tok.encode_batch(sentences, add_special_tokens=False)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [None] * len(ids)
    bar = tqdm(total=len(ids), desc=progress, disable=progress is None, unit="sentence", leave=False)
    for k in range(0, len(order), batch_size):
        chunk = order[k : k + batch_size]
        src = data.collate_translation([(ids[i], [eos]) for i in chunk], pad_id=pad_id)[0]
        for i, row in zip(chunk, generate(src).cpu(), strict=True):
            out[i] = data.decode(tok, row)
        bar.update(len(chunk))
    bar.close()
    return out


def bleu_scores(hyps, refs, lang):
    """sacreBLEU on detokenized, cased text (the standard score), and the score comparable with
    the pytorch-seq2seq tutorial: text split by spaCy's rule-based tokenizer (the one its
    `*_core_*_sm` models use), then lowercased, as its torchtext fields did."""
    import sacrebleu
    import spacy

    bleu = sacrebleu.BLEU()
    standard = bleu.corpus_score(hyps, [refs])
    nlp = spacy.blank(lang)
    tokenize = lambda text: " ".join(t.text for t in nlp.tokenizer(text))
    lower = sacrebleu.corpus_bleu(
        [tokenize(h).lower() for h in hyps], [[tokenize(r).lower() for r in refs]], tokenize="none", force=True
    )
    return {"bleu": standard.score, "bleu_lc_tok": lower.score, "detail": f"{standard} {bleu.get_signature()}"}
