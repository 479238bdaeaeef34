"""Our tokenizer trainers (subword.py, issue 22) at full size: each trained on the books (15 MB) at 8,000
beside its reference with the same settings (HF `tokenizers`' BpeTrainer, WordPieceTrainer, UnigramTrainer;
the sentencepiece package for Unigram too), compared on every line of WikiText-2 test
(studies/_tokenizer_parity.py). The targets: BPE's vocabulary, merges and ids equal to HF's, training in
<= 3 minutes; WordPiece's token set within 2% of HF's; Unigram's vocabulary >= 90% HF's and
sentencepiece's, tokens per byte within 2%. docs/tokenizers.md. (Not named tokenizers.py: a script in
studies/ would import it in place of HF's package.)"""

from study import Run

KINDS = {"bpe": 3, "wordpiece": 3, "unigram": 45, "unigram-as-hf": 45}  # kind -> expected minutes

RUNS = [
    Run(f"parity-{kind}", ["studies/_tokenizer_parity.py", "{out}", kind, "8000"], minutes=m)
    for kind, m in KINDS.items()
]


def result(results, kind):
    r = results.get(f"parity-{kind}")
    return r and r["metrics"].get("results")


def table(results):
    """Per trainer: how close to the reference, and the time it took beside HF's."""
    lines = [
        "| trainer (books, 8,000) | equal to HF | vocabulary shared with HF / sentencepiece | tokens per byte,"
        " WikiText-2 test: ours / HF / sentencepiece | HF loads ours, same ids | training: ours / HF"
        " | encoding WikiText-2 test: ours / HF (batch, threads) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        r = result(results, kind)
        if not r:
            lines.append(f"| {kind} | - | - | - | - | - | - |")
            continue
        equal = {True: "yes", False: "**no**", None: "n/a"}[
            r.get("same_vocab_and_merges") and r.get("same_ids_every_line") if kind == "bpe" else None
        ]
        spm = f" / {r['overlap_spm']:.1%}" if "overlap_spm" in r else ""
        tpb = f"{r['tokens_per_byte']:.4f} / {r['hf_tokens_per_byte']:.4f}"
        tpb += f" / {r['spm_tokens_per_byte']:.4f}" if "spm_tokens_per_byte" in r else ""
        loads = "yes" if r["hf_loads_ours_same_ids"] else "**no**"
        lines.append(
            f"| {kind} | {equal} | {r['overlap_hf']:.1%}{spm} | {tpb} | {loads}"
            f" | {r['train_s']:.0f} s / {r['hf_train_s']:.1f} s | {r['encode_s']:.1f} s / {r['hf_encode_s']:.2f} s |"
        )
    return "\n".join(lines)


def figure(results):
    """Training time, ours and HF's, per trainer."""
    groups = {k: {"ours": r["train_s"], "HF (Rust)": r["hf_train_s"]} for k in KINDS if (r := result(results, k))}
    return groups and ("Tokenizer training on the books at 8,000", "seconds", groups)
