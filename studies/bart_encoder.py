"""Is BART's encoder used? (issue 36, step 1.) The first ablation run's recipe (bart-small, token masking,
16 x 128 tokens, lr 1e-3, warmup 90, cosine over 900 steps; books + wiki + Multi30k's unpaired text in a
bart-bpe8000 vocabulary) for its first 200 steps, ours and HF's BartForConditionalGeneration through the
same loop (same initial weights, same batches), then candidate recipes (ours; a later --noising wins over
the first). Each validates every 25 steps: val_loss beside val_loss_other_source, the loss when each
window's encoder reads another window's noised text. A used encoder: a gap between the two; a collapsed
one: none. docs/bart.md, "Is the encoder used?"."""

from study import Run

DENOISE = ["train.py", "--preset", "bart-denoise-cpu", "--dataset", "{runs}/prep", "--noising", "mask"]
DENOISE += ["--batch-size", "16", "--max-steps", "200", "--eval-every", "25", "--save-every", "25"]
DENOISE += ["--eval-iters", "10", "--log-every", "5", "--out-dir", "{out}"]
RECIPES = {  # name -> (what it tries, its flags)
    "lr1e-3": ("the failing recipe (lr 1e-3, warmup 90)", ["--lr", "1e-3", "--warmup", "90", "--decay-steps", "900"]),
    "lr3e-4-w300": ("lr 3e-4, warmup 300", ["--lr", "3e-4", "--warmup", "300", "--decay-steps", "3000"]),
    "lr1e-3-nodrop": ("lr 1e-3, warmup 90, no dropout", ["--lr", "1e-3", "--warmup", "90", "--decay-steps", "900"]),
    "lr1e-4-w300": ("lr 1e-4, warmup 300", ["--lr", "1e-4", "--warmup", "300", "--decay-steps", "3000"]),
    "infill-lr1e-3": (
        "text infilling, lr 1e-3, warmup 90",
        ["--noising", "infill", "--lr", "1e-3", "--warmup", "90", "--decay-steps", "900"],
    ),
    # longer runs: does the encoder come into use once the lr has warmed up slowly? (~18 and ~30 min)
    "lr3e-4-w300-900steps": (
        "lr 3e-4, warmup 300, 900 steps",
        [
            "--lr",
            "3e-4",
            "--warmup",
            "300",
            "--decay-steps",
            "3000",
            "--max-steps",
            "900",
            "--eval-every",
            "100",
            "--save-every",
            "100",
        ],
    ),
    "lr5e-4-w1000-1500steps": (
        "lr 5e-4, warmup 1,000 (the translation recipes' slow start), 1,500 steps",
        [
            "--lr",
            "5e-4",
            "--warmup",
            "1000",
            "--decay-steps",
            "3000",
            "--max-steps",
            "1500",
            "--eval-every",
            "100",
            "--save-every",
            "100",
        ],
    ),
    # positions that align from the start: encoder and decoder tables begin as the same sinusoids (~4 min each)
    "sinpos-lr1e-3": (
        "sinusoidal position init, lr 1e-3, warmup 90",
        ["--pos-init", "sinusoidal", "--lr", "1e-3", "--warmup", "90", "--decay-steps", "900"],
    ),
    "sinpos-lr3e-4-w300": (
        "sinusoidal position init, lr 3e-4, warmup 300",
        ["--pos-init", "sinusoidal", "--lr", "3e-4", "--warmup", "300", "--decay-steps", "3000"],
    ),
}
MODELS = {"lr1e-3": ("bart", "hf-bart")}  # the failing recipe: ours and HF's; the candidates: ours


def denoise(recipe, model):
    flags = RECIPES[recipe][1] + (["--dropout", "0.0"] if recipe.endswith("nodrop") else [])
    name = f"{recipe}-{'hf' if model == 'hf-bart' else 'ours'}"
    minutes = 4 if "steps" not in recipe else 18 if "900" in recipe else 30
    return Run(
        name, [*DENOISE, *flags, "--model", model], needs=["prep"], minutes=minutes, metric="val_loss_other_source"
    )


RUNS = [
    Run(
        "prep",
        ["data.py", "lm", "--source", "books+wiki+multi30k", "--tokenizer", "bart-bpe8000", "--out", "{out}"],
        minutes=4,
    ),
    *(denoise(recipe, model) for recipe in RECIPES for model in MODELS.get(recipe, ("bart",))),
]


def table(results):
    lines = ["| run | what | step | val_loss | val_loss_other_source | gap (used encoder: > 0) |"]
    lines.append("|---|---|---|---|---|---|")
    for run in RUNS[1:]:
        recipe, model = run.name.rsplit("-", 1)
        r = results.get(run.name)
        m = r["metrics"] if r else {}
        what = f"{RECIPES[recipe][0]}, {'HF BartForConditionalGeneration' if model == 'hf' else 'ours'}"
        if "val_loss" not in m:
            lines.append(f"| {run.name} | {what} | - | - | - | - |")
            continue
        loss, other = m["val_loss"], m["val_loss_other_source"]
        lines.append(f"| {run.name} | {what} | {m['step']} | {loss:.3f} | {other:.3f} | {other - loss:+.1e} |")
    return "\n".join(lines)


def figure(results):
    """Validation loss with the true source and with another sentence's: equal bars, an unused encoder."""
    groups = {}
    for run in RUNS[1:]:
        m = results.get(run.name, {}).get("metrics", {})
        if "val_loss" in m:
            groups[run.name] = {"own source": m["val_loss"], "another source": m["val_loss_other_source"]}
    return groups and ("BART denoising: does the decoder use the encoder?", "validation loss", groups)
