"""train.py: accumulation, DDP and resume give the same training; checkpoints, CLI, BLEU."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from conftest import lacks, require
from tokenizers import Tokenizer

import bert
import data
import pretraining_data
import recipes
import run_folder
import tasks
import train
import transformer as T
import translation

multi30k = require("multi30k/train.de", "multi30k/val.en", "multi30k/test_2016_flickr.en")
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "tiny", "--log-every", "1"]


def losses(out_dir):
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def weights(out_dir):
    return train.load_checkpoint(train.latest_checkpoint(out_dir))["model"]


@multi30k
@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_accumulation_equals_one_big_batch():
    run = train.Run(train.make_config("tiny", {"dropout": 0.0, "out_dir": str(Path(os.environ["PREP_DIR"]) / "acc")}))
    steps = run.epoch_steps()
    b1, b2 = steps[0][0], steps[1][0]
    row_big, n_big = run.accumulate_gradients([b1 + b2])
    big = {n: p.grad.clone() for n, p in run.model.named_parameters()}
    run.opt.zero_grad(set_to_none=True)
    row_acc, n_acc = run.accumulate_gradients([b1, b2])
    assert n_acc == n_big and row_acc["loss"] == pytest.approx(row_big["loss"], rel=1e-6)
    for n, p in run.model.named_parameters():
        assert torch.allclose(p.grad, big[n], atol=1e-7, rtol=1e-5), n


@multi30k
@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_resume_is_exact(tmp_path):
    """Killed at step 5, resumed from the checkpoint of step 3 == uninterrupted: same logged
    losses and the same final weights, bitwise (dropout on, so the RNG state matters too)."""
    a, b = tmp_path / "a", tmp_path / "b"
    train.main([*TINY, "--out-dir", str(a), "--max-steps", "6", "--save-every", "3"])
    train.main([*TINY, "--out-dir", str(b), "--max-steps", "5", "--save-every", "3"])
    (b / "ckpt_0000005.pt").unlink()  # as if killed before its final save
    train.main(["--out-dir", str(b), "--resume", "--max-steps", "6"])
    assert losses(a) == losses(b) and len(losses(a)) == 6
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in a.glob("ckpt_*.pt")) == ["ckpt_0000003.pt", "ckpt_0000006.pt"]


@multi30k
@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun, 2 CPU processes (gloo), 3 steps == 1 process accumulating the same 2 micro-batches.
    Adam with eps=1 is close to SGD, so weights differ only by gradient rounding."""
    common = [*TINY, "--dropout", "0", "--eps", "1", "--lr", "1", "--max-steps", "3", "--save-every", "3"]
    common += ["--batch-tokens", "1024"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-port=29517"]
    subprocess.run([*torchrun, "train.py", *common, "--out-dir", str(tmp_path / "ddp")], cwd=ROOT, env=env, check=True)
    train.main([*common, "--grad-accum", "2", "--out-dir", str(tmp_path / "one")])
    wd, wo = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    init = train.Run(train.make_config("tiny", {"out_dir": str(tmp_path / "init")})).model.state_dict()
    assert max((wd[k] - init[k]).abs().max().item() for k in wd) > 1e-2  # training moved the weights
    assert max((wd[k] - wo[k]).abs().max().item() for k in wd) <= 1e-5
    (steps_d, loss_d), (steps_o, loss_o) = (zip(*losses(tmp_path / r), strict=True) for r in ("ddp", "one"))
    assert steps_d == steps_o == (1, 2, 3) and loss_d == pytest.approx(loss_o, rel=1e-5)


@multi30k
@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_averaging_corrupt_checkpoint_and_cli(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0])}
    for i, w in enumerate([a["w"], a["w"] * 3]):
        torch.save({"model": {"w": w}}, tmp_path / f"ckpt_{i:07d}.pt")
    avg = run_folder.average_checkpoints(train.checkpoints(tmp_path))
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0]))
    bad = tmp_path / "ckpt_0000009.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint .*ckpt_0000009.pt"):
        train.load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.latest_checkpoint(tmp_path / "empty")
    actions, overrides = train.parse_args(["--preset", "multi30k", "--d-model", "64", "--no-share-embeddings"])
    cfg = train.make_config(actions["preset"], overrides)
    assert (cfg.d_model, cfg.num_layers, cfg.share_embeddings, cfg.nhead) == (64, 3, False, 4)
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert all(f"--{f.name.replace('_', '-')}" in help_text for f in train.all_fields().values())


@multi30k
def test_bleu_scores():
    refs = ["A man in an orange hat starring at something.", "Two dogs play."]
    assert translation.bleu_scores(refs, refs, "en")["bleu"] == pytest.approx(100)
    low = translation.bleu_scores([r.upper() for r in refs], refs, "en")
    assert low["bleu"] < 10 and low["bleu_lc_tok"] == pytest.approx(100)


@multi30k
@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_each_epoch_has_its_own_order_and_training_stops(tmp_path, monkeypatch):
    cfg = {"out_dir": str(tmp_path), "max_epochs": 2, "log_every": 1000, "max_steps": 200}  # max_steps: a guard
    run = train.Run(train.make_config("tiny", cfg))
    run.task.train_pairs, run.task.lengths = run.task.train_pairs[:300], run.task.lengths[:300]
    seen = []
    monkeypatch.setattr(run, "train_step", lambda m: seen.append(m) or run.optimizer_step() or ({"loss": 0.0}, 1.0))
    monkeypatch.setattr(run, "validate", lambda: None)
    run.train()
    per_epoch = len(run.epoch_steps())
    assert len(seen) == 2 * per_epoch and run.epoch == 2 and run.step == 2 * per_epoch
    first, second = seen[:per_epoch], seen[per_epoch:]
    assert first != second  # reshuffled
    assert sorted(i for step in first for b in step for i in b) == sorted(i for step in second for b in step for i in b)


# ------------------------------------------------------------------------------ BERT pretraining


@pytest.fixture(scope="module")
def bert_data(tmp_path_factory):
    """A small prepared MLM/NSP folder (static masks) and one stored unmasked (dynamic masking)."""
    import random

    import data

    root = tmp_path_factory.mktemp("bert")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(150)]
    lines = []
    for _ in range(40):
        lines += [" ".join(rng.choices(words, k=rng.randint(3, 12))) + " ." for _ in range(rng.randint(2, 15))] + [""]
    (root / "corpus.txt").write_text("\n".join(lines))
    tok = pretraining_data.train_wordpiece((s for d in data.iter_documents(str(root / "corpus.txt")) for s in d), 200)
    folders = {}
    for name, static in (("static", True), ("dynamic", False)):
        spec = pretraining_data.PretrainingSpec(max_seq_length=32, dupe_factor=2, valid_every=8, static_masking=static)
        pretraining_data.prepare_pretraining(str(root / "corpus.txt"), root / name, tok, spec, workers=1)
        folders[name] = str(root / name)
    return folders


BERT = ["--preset", "bert-tiny-test", "--log-every", "1"]


def rows(out_dir, key):
    return [r[key] for r in map(json.loads, (Path(out_dir) / "metrics.jsonl").read_text().splitlines()) if key in r]


def test_bert_pretraining_matches_hf_bert_through_the_same_loop(bert_data, tmp_path):
    """--model bert and --model hf-bert: same data order, same initial weights, dropout 0 ->
    the same losses and accuracies at every step; validation logged; the loss goes down."""
    for model in ("bert", "hf-bert"):
        args = [*BERT, "--model", model, "--dataset", bert_data["static"], "--max-steps", "12", "--eval-every", "6"]
        train.main([*args, "--out-dir", str(tmp_path / model), "--decay-steps", "40"])
    for key in ("loss", "mlm_acc", "nsp_acc", "val_mlm_acc", "val_loss"):
        ours, hf = rows(tmp_path / "bert", key), rows(tmp_path / "hf-bert", key)
        assert len(ours) == len(hf) > 0 and ours == pytest.approx(hf, rel=1e-4, abs=1e-6), key
    loss = rows(tmp_path / "bert", "loss")
    assert len(loss) == 12 and sum(loss[-3:]) < sum(loss[:3])
    assert train.plot(tmp_path / "bert", [tmp_path / "hf-bert"]).exists()
    final = train.main(["--out-dir", str(tmp_path / "bert"), "--evaluate"])
    assert final["val_mlm_acc"] == pytest.approx(rows(tmp_path / "bert", "val_mlm_acc")[-1])
    # exported to HF's format: transformers gives the same held-out MLM logits
    import transformers

    import bert

    train.main(["--out-dir", str(tmp_path / "bert"), "--export-hf", str(tmp_path / "hf")])
    ours, hf = (
        bert.BertForPreTraining.from_pretrained(tmp_path / "hf"),
        transformers.BertForPreTraining.from_pretrained(tmp_path / "hf"),
    )
    batch = tasks.PretrainingTask(train.make_config("bert-tiny-test", {"dataset": bert_data["static"]}), 1).batch(
        [0, 1]
    )
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        a, b = ours.eval()(**inputs).mlm_logits, hf.eval()(**inputs).prediction_logits
    real = batch["attention_mask"].bool()
    assert (a - b)[real].abs().max() < 1e-4


def test_bert_accumulation_equals_one_big_batch(bert_data, tmp_path):
    cfg = train.make_config("bert-tiny-test", {"dataset": bert_data["static"], "out_dir": str(tmp_path)})
    run = train.Run(cfg)
    b1, b2 = run.epoch_steps()[0][0], run.epoch_steps()[1][0]
    row_big, n_big = run.accumulate_gradients([b1 + b2])
    big = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}
    run.opt.zero_grad(set_to_none=True)
    row_acc, n_acc = run.accumulate_gradients([b1, b2])
    assert n_acc == n_big and row_acc == pytest.approx(row_big, rel=1e-6)
    for n, g in big.items():
        assert torch.allclose(dict(run.model.named_parameters())[n].grad, g, atol=1e-7, rtol=1e-5), n


@pytest.mark.slow  # the loop's BERT parity stays quick (test_bert_pretraining_matches_hf_bert_through_the_same_loop)
def test_bert_dynamic_masking_and_exact_resume(bert_data, tmp_path):
    """Samples stored unmasked get new masks each epoch (the same after a resume); resumed == uninterrupted."""
    cfg = train.make_config("bert-tiny-test", {"dataset": bert_data["dynamic"], "out_dir": str(tmp_path / "x")})
    task = train.Run(cfg).task
    task.epoch_batches(0)
    first = task.batch([0, 1, 2])
    task.epoch_batches(1)
    second = task.batch([0, 1, 2])
    assert (first["labels"] != -100).any() and not torch.equal(first["labels"], second["labels"])
    task.epoch_batches(0)
    assert torch.equal(task.batch([0, 1, 2])["input_ids"], first["input_ids"])
    a, b = tmp_path / "a", tmp_path / "b"
    common = [*BERT, "--dataset", bert_data["dynamic"], "--dropout", "0.1", "--save-every", "3", "--decay-steps", "40"]
    steps_per_epoch = len(task.epoch_batches(0))
    n = steps_per_epoch + 3  # across an epoch boundary
    train.main([*common, "--out-dir", str(a), "--max-steps", str(n)])
    train.main([*common, "--out-dir", str(b), "--max-steps", str(n - 1)])
    for p in sorted(b.glob("ckpt_*.pt"))[-1:]:
        if int(p.stem.split("_")[1]) % 3:
            p.unlink()  # as if killed before the final save
    train.main(["--out-dir", str(b), "--resume", "--max-steps", str(n)])
    assert rows(a, "loss") == rows(b, "loss") and len(rows(a, "loss")) == n
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bert_mask_prob_remasks_training_samples_only(bert_data, tmp_path):
    """--mask-prob 0.4: training samples get new masks at that rate (labels = the original
    tokens, at most --max-predictions); held-out samples keep their prepared 15% masks.
    --pos-init sinusoidal starts the position table from scaled sinusoids, HF's twin too."""
    base = train.make_config("bert-tiny-test", {"dataset": bert_data["static"]})
    cfg = train.make_config("bert-tiny-test", {"dataset": bert_data["static"], "mask_prob": 0.4})
    plain, remasked = tasks.PretrainingTask(base, 1), tasks.PretrainingTask(cfg, 1)
    plain.epoch_batches(0), remasked.epoch_batches(0)
    idx = list(range(len(plain.train_data)))
    a, b = plain.batch(idx), remasked.batch(idx)
    original = a["input_ids"].clone()
    original[a["labels"] != -100] = a["labels"][a["labels"] != -100]  # the unmasked samples
    masked_b = b["labels"] != -100
    assert torch.equal(b["labels"][masked_b], original[masked_b])  # labels are the original tokens
    assert torch.equal(b["input_ids"][~masked_b], original[~masked_b])  # nothing else changed
    real = (a["attention_mask"].sum(1)).float()
    assert (masked_b.sum(1) / real).mean() == pytest.approx(0.4, abs=0.03)
    assert (a["labels"] != -100).sum() * 2 < masked_b.sum()
    limited = tasks.PretrainingTask(train.make_config("bert-tiny-test", {**vars(cfg), "max_predictions": 3}), 1)
    limited.epoch_batches(0)
    assert ((limited.batch(idx)["labels"] != -100).sum(1) <= 3).all()
    valid = list(range(len(plain.valid_data)))
    assert torch.equal(
        plain.batch(valid, plain.valid_data)["labels"], remasked.batch(valid, remasked.valid_data)["labels"]
    )
    # sinusoidal position init: ours and HF's twin start from the same scaled table
    sin = train.make_config("bert-tiny-test", {"dataset": bert_data["static"], "pos_init": "sinusoidal"})
    ours = tasks.PretrainingTask(sin, 1).build_model()
    table = ours.bert.embeddings.position.weight.detach()
    assert table.std().item() == pytest.approx(ours.config.initializer_range, rel=1e-3)
    assert torch.allclose(table[:, 0] / table[0, 1], torch.sin(torch.arange(len(table)).float()), atol=1e-4)
    hf = tasks.PretrainingTask(train.make_config("bert-tiny-test", {**vars(sin), "model": "hf-bert"}), 1).build_model()
    assert torch.equal(hf.hf.bert.embeddings.position_embeddings.weight.detach(), table)  # HF's, in HFTwin
    with pytest.raises(ValueError, match="pos_init"):
        tasks.PretrainingTask(train.make_config("bert-tiny-test", {**vars(sin), "pos_init": "rope"}), 1).build_model()


def test_bert_data_made_with_a_padding_tokenizer_is_refused(bert_data, tmp_path):
    """A folder whose tokenizer.json pads or truncates was made by a pipeline that padded every
    sentence (data.py no longer does): training on it is an error, not a silent waste."""
    import shutil

    from tokenizers import Tokenizer

    folder = tmp_path / "old"
    shutil.copytree(bert_data["static"], folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_padding(length=32)
    tok.save(str(folder / "tokenizer.json"))
    with pytest.raises(ValueError, match="pads or truncates"):
        tasks.PretrainingTask(train.make_config("bert-tiny-test", {"dataset": str(folder)}), 1)


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_bert_presets_run_under_torchrun_8_processes(bert_data, tmp_path):
    """The paper's 8-GPU preset (8 processes x 2 sequences here, gloo, bert-tiny) and the 1-GPU
    preset (one process, 8 accumulated micro-batches) start, run and log the same losses."""
    small = ["--arch", "bert-tiny", "--batch-size", "16", "--max-steps", "2", "--warmup", "1", "--log-every", "1"]
    small += ["--dataset", bert_data["static"], "--dropout", "0", "--eval-every", "0", "--save-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=8", "--master-port=29519"]
    ddp = ["--preset", "bert-base-8gpu", *small, "--out-dir", str(tmp_path / "ddp")]
    subprocess.run([*torchrun, "train.py", *ddp], cwd=ROOT, env=env, check=True, capture_output=True)
    train.main(["--preset", "bert-base-1gpu", *small, "--out-dir", str(tmp_path / "one")])
    assert train.make_config("bert-base-1gpu", {}).grad_accum == 8
    ddp_loss, one_loss = rows(tmp_path / "ddp", "loss"), rows(tmp_path / "one", "loss")
    assert len(ddp_loss) == 2 and ddp_loss == pytest.approx(one_loss, rel=1e-5)


# ---------------------------------------------------------------------------- GPT language modeling


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    import data

    root = tmp_path_factory.mktemp("lm")
    text = "".join(f"line {i % 97}: the quick brown fox {i % 13} jumps.\n" for i in range(3000))
    (root / "t.txt").write_text(text)
    return str(data.prepare_lm(str(root / "t.txt"), "char", root / "char"))


GPT = ["--preset", "shakespeare-char-cpu", "--log-every", "1", "--eval-every", "5", "--eval-iters", "2"]


def test_gpt_training_matches_hf_gpt2_and_resumes_exactly(lm_data, tmp_path):
    """--model gpt and --model hf-gpt2 from the same init on the same windows log the same losses;
    a run stopped at step 5 and resumed equals the uninterrupted one (dropout on)."""
    for model in ("gpt", "hf-gpt2"):
        train.main(
            [*GPT, "--model", model, "--dataset", lm_data, "--max-steps", "10", "--out-dir", str(tmp_path / model)]
        )
    for key in ("loss", "val_loss", "train_eval_loss"):
        ours, hf = rows(tmp_path / "gpt", key), rows(tmp_path / "hf-gpt2", key)
        assert len(ours) == len(hf) > 0 and ours == pytest.approx(hf, rel=1e-4), key
    assert (
        rows(tmp_path / "gpt", "mfu")[-1] > 0 and rows(tmp_path / "gpt", "loss")[-1] < rows(tmp_path / "gpt", "loss")[0]
    )
    common = [*GPT, "--dataset", lm_data, "--dropout", "0.1", "--save-every", "5", "--decay-steps", "12"]
    a, b = tmp_path / "a", tmp_path / "b"
    train.main([*common, "--out-dir", str(a), "--max-steps", "8"])
    train.main([*common, "--out-dir", str(b), "--max-steps", "7"])
    (b / "ckpt_0000007.pt").unlink()  # killed before the final save: resume from step 5
    train.main(["--out-dir", str(b), "--resume", "--max-steps", "8"])
    assert rows(a, "loss") == rows(b, "loss") and len(rows(a, "loss")) == 8
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # exported to HF's format: transformers gives our logits
    import transformers

    train.main(["--out-dir", str(a), "--export-hf", str(tmp_path / "hf")])
    ids = torch.randint(0, 30, (2, 16))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ours = train.run_model(a)[2]
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() < 1e-4


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_xlnet_permutation_lm_matches_hf_xlnet_through_the_loop(lm_data, tmp_path):
    """--model xlnet and hf-xlnet: same init, windows, permutations and memory, no dropout -> the same loss at
    every step (the memory of each window encoded by each model's own transformer); validation logged."""
    args = ["--preset", "xlnet-tiny-test", "--dataset", lm_data, "--dropout", "0", "--max-steps", "6"]
    args += ["--log-every", "1", "--eval-every", "6", "--eval-iters", "2"]
    for model in ("xlnet", "hf-xlnet"):
        train.main([*args, "--model", model, "--out-dir", str(tmp_path / model)])
    ours, hf = (rows(tmp_path / m, "loss") for m in ("xlnet", "hf-xlnet"))
    assert len(ours) == 6 and ours == pytest.approx(hf, rel=1e-5, abs=1e-6) and ours[-1] < ours[0]
    assert rows(tmp_path / "xlnet", "val_loss") == pytest.approx(rows(tmp_path / "hf-xlnet", "val_loss"), rel=1e-5)
    task = train.run_model(tmp_path / "xlnet")[1]
    b = task.batch([0, 40])
    assert b["mem_ids"].shape == (2, 8) and b["input_ids"].shape == (2, 16) and b["target_mapping"].shape == (2, 2, 16)
    tokens = task.splits["train"]
    assert b["mem_ids"][1].tolist() == tokens[40:48].tolist() and b["input_ids"][1].tolist() == tokens[48:64].tolist()


def test_time_limit_stops_at_a_checkpoint_and_resumes_exactly(lm_data, tmp_path):
    """--time-limit (here: reached after the first step) stops the run after a whole step, with a
    checkpoint at that step; --resume then gives the losses and weights of the uninterrupted run
    (dropout on). SIGTERM takes the same way out (test_sigterm_stops_at_a_checkpoint)."""
    common = [*GPT, "--dataset", lm_data, "--dropout", "0.1", "--save-every", "1000", "--decay-steps", "12"]
    common += ["--batch-size", "8", "--eval-every", "3"]
    a, b = tmp_path / "a", tmp_path / "b"
    train.main([*common, "--out-dir", str(a), "--max-steps", "4"])
    run = train.main([*common, "--out-dir", str(b), "--max-steps", "4", "--time-limit", "1e-9"])
    assert run.stopped.startswith("time limit") and run.step == 1
    assert [p.name for p in train.checkpoints(b)] == ["ckpt_0000001.pt"]
    assert train.main(["--out-dir", str(b), "--resume"]).stopped is None  # the limit was that invocation's own
    assert [p.name for p in train.checkpoints(b)] == ["ckpt_0000004.pt"]  # as uninterrupted: the stop's is gone
    assert rows(a, "loss") == rows(b, "loss") and len(rows(a, "loss")) == 4
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # another process (its start alone takes seconds): `pytest -m 'not slow'` skips it
def test_sigterm_stops_at_a_checkpoint(lm_data, tmp_path):
    """SIGTERM takes --time-limit's way out (the loop returns, the state is saved), sent from another process."""
    common = [*GPT, "--dataset", lm_data, "--dropout", "0.1", "--save-every", "1000", "--decay-steps", "12"]
    common += ["--batch-size", "8", "--eval-every", "3"]
    c = tmp_path / "c"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", *common, "--out-dir", str(c), "--max-steps", "100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180  # a loaded machine starts slowly: wait for the first logged step
    while not ((c / "metrics.jsonl").exists() and rows(c, "loss")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=180)[0]
    step = int(train.latest_checkpoint(c).stem.split("_")[1])
    assert proc.returncode == train.STOPPED and f"stopped (SIGTERM; continue with --resume): step {step}," in out
    assert 0 < step < 100000 and len(rows(c, "loss")) == step
    assert train.load_checkpoint(train.latest_checkpoint(c))["position"]["step"] == step


T5 = ["--preset", "t5-tiny-test", "--log-every", "1", "--eval-every", "5", "--eval-iters", "2", "--dropout", "0"]


SLOW = pytest.mark.slow  # the quick subset keeps one case of the parametrized loop tests


@pytest.mark.parametrize("arch", ["t5-tiny-test", pytest.param("t5-v1_1-tiny-test", marks=SLOW)])
def test_t5_span_corruption_matches_hf_t5_and_resumes_exactly(arch, lm_data, tmp_path):
    """--model t5 and --model hf-t5 from the same init (v1.1: HF's head untied like ours) on the same
    corrupted windows log the same losses; a resumed run equals the uninterrupted one; the export loads in HF."""
    for model in ("t5", "hf-t5"):
        args = [*T5, "--arch", arch, "--model", model, "--dataset", lm_data, "--max-steps", "10"]
        train.main([*args, "--out-dir", str(tmp_path / model)])
    for key in ("loss", "val_loss", "train_eval_loss"):
        ours, hf = rows(tmp_path / "t5", key), rows(tmp_path / "hf-t5", key)
        assert len(ours) == len(hf) > 0 and ours == pytest.approx(hf, rel=1e-4), key
    assert rows(tmp_path / "t5", "loss")[-1] < rows(tmp_path / "t5", "loss")[0]
    optimizer = "adamw-scale" if arch == "t5-tiny-test" else "adafactor"  # T5's two: their state resumes too
    common = [*T5, "--arch", arch, "--dataset", lm_data, "--save-every", "3", "--dropout", "0.1", "--decay-steps", "12"]
    common += ["--optimizer", optimizer]
    a, b = tmp_path / "a", tmp_path / "b"
    train.main([*common, "--out-dir", str(a), "--max-steps", "7"])
    train.main([*common, "--out-dir", str(b), "--max-steps", "5"])
    (b / "ckpt_0000005.pt").unlink()  # killed before the final save: resume from step 3
    train.main(["--out-dir", str(b), "--resume", "--max-steps", "7"])
    assert rows(a, "loss") == rows(b, "loss") and len(rows(a, "loss")) == 7
    import transformers

    train.main(["--out-dir", str(a), "--export-hf", str(tmp_path / "hf")])
    cfg, task, ours, _ = train.run_model(a)
    batch = task.batch([0, 100], "val")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (hf(**batch).logits - ours(**batch).logits).abs().max() < 1e-4
    import t5

    inputs, labels = batch["input_ids"], batch["labels"]  # T5's lengths, ids above the data's vocabulary
    assert inputs.shape == (2, 32) and labels.shape == (2, t5.input_and_target_lengths(32)[1])
    assert labels[:, 0].eq(task.first_sentinel).all() and labels[:, -1].eq(task.eos).all()
    assert task.first_sentinel == task.vocab_size - 1 == ours.config.vocab_size - 1


def test_t5_span_corruption_takes_a_t5_vocabularys_own_ids(tmp_path):
    """On data of `--tokenizer unigram<N>` the task uses the vocabulary's pad, eos and sentinels (no
    ids appended), and a model of that vocabulary trains on it."""
    import data

    text = "".join(f"line {i % 97}: the quick brown fox {i % 13} jumps.\n" for i in range(2000))
    (tmp_path / "t.txt").write_text(text)
    folder = str(data.prepare_lm(str(tmp_path / "t.txt"), "unigram250", tmp_path / "u"))
    train.main([*T5, "--dataset", folder, "--max-steps", "3", "--out-dir", str(tmp_path / "run")])
    cfg, task, model, _ = train.run_model(tmp_path / "run")
    V, config = task.tok.vocab_size, model.config  # at most 250: the small text offers fewer pieces
    ids = (task.pad, task.eos, task.first_sentinel, task.vocab_size)
    assert ids == (0, 1, V - 1, V) == (config.pad_token_id, config.eos_token_id, V - 1, config.vocab_size)
    labels = task.batch([0, 50], "val")["labels"]
    assert labels[:, 0].eq(V - 1).all() and labels[:, -1].eq(1).all() and labels.max() == V - 1


@multi30k
@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_t5_translate_trains_validates_and_scores_bleu(tmp_path, monkeypatch):
    """--model t5-translate: T5 as text to text on Multi30k (the prefix, T5's ids), validation loss
    and greedy BLEU logged, translation greedy and with beam search; --evaluate averages only
    when there are two checkpoints or more."""
    out = tmp_path / "t5"
    args = ["--preset", "t5-multi30k", "--arch", "t5-tiny-test", "--vocab-size", "500", "--max-steps", "6"]
    train.main([*args, "--eval-every", "6", "--log-every", "3", "--out-dir", str(out)])
    assert rows(out, "val_bleu") and rows(out, "val_loss")[-1] < 7 and len(rows(out, "loss")) == 2
    cfg, task, model, _ = train.run_model(out)
    batch = task.batch([0, 1])
    prefix = task.tok.decode(task.prefix)
    assert (
        prefix.startswith("translate German to English")
        and batch["input_ids"][0, : len(task.prefix)].tolist() == task.prefix
    )
    assert (
        batch["decoder_input_ids"][:, 0].eq(task.pad).all()
        and (batch["labels"] == -100).sum() == (batch["labels"] < 0).sum()
    )
    sentences = [s for s, _ in task.valid_text[:6]]  # --evaluate's decoding (the whole test set, so not here)
    greedy, beam = task.translate(model, sentences, beam=1), task.translate(model, sentences, beam=2)
    assert len(greedy) == len(beam) == 6 and all(isinstance(h, str) for h in greedy + beam)
    train.main(["--out-dir", str(out), "--export-hf", str(tmp_path / "hf")])  # the translator, HF's way
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert Tokenizer.from_file(str(tmp_path / "hf/tokenizer.json")).to_str() == task.tok.to_str()
    with torch.no_grad():
        ids = batch["input_ids"][:1, : len(task.prefix) + 4]
        torch.testing.assert_close(
            hf.generate(ids, max_new_tokens=8, do_sample=False, num_beams=1),
            model.eval().generate(ids, max_new_tokens=8),  # HF's layout: the start token, then up to eos
        )
    assert greedy[0] == task.translate(model, sentences[:1], beam=1)[0]  # batching does not change a translation
    read = data.read_parallel
    monkeypatch.setattr(data, "read_parallel", lambda *a: read(*a)[:4])  # a test set of 4 pairs
    (ckpt,) = train.checkpoints(out)
    one = train.evaluate(out, split="test")
    assert {k for k in one if k.startswith("test_")} == {"test_last_greedy", "test_last_beam4_lp0.6"}
    shutil.copy(ckpt, out / "ckpt_0000007.pt")  # a second checkpoint: the average is scored too
    two = train.evaluate(out, split="test")
    assert {"test_avg2_greedy", "test_avg2_beam4_lp0.6"} <= set(two) and two["test_avg2_greedy"]["bleu"] == two[
        "test_last_greedy"
    ]["bleu"]


@multi30k
@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_unilm_translate_trains_validates_translates_and_reinits(bert_teacher, tmp_path):
    """--model unilm-translate on Multi30k from a BERT folder: s2s-ft batches (pseudo tokens, labels only
    there), validation loss and greedy BLEU, translation greedy and beam (batching changes nothing);
    --reinit starts the same network from random weights; a too long --max-len is refused."""
    import unilm

    out = tmp_path / "unilm"
    args = ["--preset", "unilm-multi30k", "--init-from", bert_teacher, "--train-fraction", "0.02"]
    train.main(
        [*args, "--max-steps", "4", "--warmup", "1", "--eval-every", "4", "--log-every", "2", "--out-dir", str(out)]
    )
    assert rows(out, "val_bleu") and len(rows(out, "loss")) == 2 and rows(out, "val_loss")
    cfg, task, model, _ = train.run_model(out)
    assert isinstance(model, unilm.UniLMForLM) and model.label_smoothing == 0.1
    batch = task.batch([0, 1])
    cls, sep, mask, pad = task.ids
    labeled = batch["labels"] != -100
    assert batch["input_ids"][:, 0].eq(cls).all() and labeled.sum() == sum(
        len(task.train_pairs[i][1]) + 1 for i in (0, 1)
    )
    assert torch.equal(batch["input_ids"], task.batch([0, 1])["input_ids"])  # the same pseudo tokens: resumable
    sentences = [s for s, _ in task.valid_text[:4]]
    greedy, beam = task.translate(model, sentences, beam=1), task.translate(model, sentences, beam=2)
    assert len(greedy) == len(beam) == 4 and greedy[1] == task.translate(model, sentences[1:2], beam=1)[0]
    fresh = train.make_config("unilm-multi30k", {"init_from": bert_teacher, "reinit": True, "out_dir": str(tmp_path)})
    start = translation.UniLMTranslationTask(fresh, 1).build_model().bert.embeddings.word.weight
    pretrained = bert.BertModel.from_pretrained(bert_teacher).embeddings.word.weight
    assert start.shape == pretrained.shape and not torch.equal(start, pretrained)
    with pytest.raises(ValueError, match="--max-len 300"):
        translation.UniLMTranslationTask(dataclasses.replace(fresh, max_len=300), 1)


@multi30k
@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_t5_transfer_pretrains_on_the_translation_vocabulary_and_fine_tunes_from_it(tmp_path):
    """The transfer study's path: `data.py lm` on Multi30k's unpaired training text with the translation
    task's tokenizer file, span corruption on it (the vocabulary's pad and eos, sentinels after its ids),
    the export, then t5-translate --init-from it on a share of the pairs; a checkpoint of another
    vocabulary or bad --train-fraction are named errors."""
    import data
    import t5

    args = ["--preset", "t5-multi30k", "--arch", "t5-tiny-test", "--vocab-size", "500", "--max-steps", "1"]
    train.main([*args, "--eval-every", "0", "--out-dir", str(tmp_path / "scratch")])
    tok_file = next((Path(os.environ["PREP_DIR"]) / "multi30k").glob("tokenizer-de-en-bpe500-*.json"))
    docs = list(data.iter_documents("multi30k"))
    n_pairs = len(data.read_parallel("multi30k", "train", "de", "en"))
    assert sum(map(len, docs)) == 2 * n_pairs and max(map(len, docs)) == 100
    folder = data.prepare_lm("multi30k", str(tok_file), tmp_path / "lm")
    meta, tok, splits = data.load_lm(folder)
    assert meta["vocab_size"] == 500 and tok.eot == 2 and splits["val"].size > 0  # documents end with </s>
    train.main([*T5, "--dataset", str(folder), "--max-steps", "3", "--out-dir", str(tmp_path / "span")])
    _, span, pretrained, _ = train.run_model(tmp_path / "span")
    assert (span.pad, span.eos, span.first_sentinel, span.vocab_size) == (0, 2, 599, 600)
    train.main(["--out-dir", str(tmp_path / "span"), "--export-hf", str(tmp_path / "hf")])
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    tune = [*args, "--init-from", str(tmp_path / "hf"), "--train-fraction", "0.1", "--eval-every", "0"]
    train.main([*tune, "--out-dir", str(tmp_path / "tuned")])
    cfg, task, _, _ = train.run_model(tmp_path / "tuned")
    start = task.build_model()  # the fine-tuning's first weights: the pretrained ones
    assert len(task.train_pairs) == round(0.1 * len(train.run_model(tmp_path / "scratch")[1].train_pairs))
    assert isinstance(start, t5.T5ForConditionalGeneration) and start.config.vocab_size == 600
    assert torch.equal(start.shared.weight, pretrained.shared.weight)
    with pytest.raises(ValueError, match="another tokenizer.json"):
        train.main([*tune, "--vocab-size", "400", "--out-dir", str(tmp_path / "other")])
    with pytest.raises(ValueError, match=r"train_fraction \(--train-fraction\) must be in \(0, 1\]"):
        train.main([*args, "--train-fraction", "0", "--out-dir", str(tmp_path / "none")])


@multi30k
@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_bart_translate_fine_tunes_a_denoising_export_on_its_vocabulary(tmp_path):
    """The ablation's translation path: denoising on Multi30k's unpaired text with a BART byte-level
    BPE, the export, then bart-translate --init-from it with its tokenizer.json: <s> src </s> ->
    <s> tgt </s> from </s>, <s> forced first; translations decoded; a checkpoint of another
    vocabulary or a --max-len past the positions are named errors."""
    import data

    folder = data.prepare_lm("multi30k", "bart-bpe600", tmp_path / "lm")
    train.main([*BART, "--dataset", str(folder), "--max-steps", "2", "--out-dir", str(tmp_path / "denoise")])
    train.main(["--out-dir", str(tmp_path / "denoise"), "--export-hf", str(tmp_path / "hf")])
    _, _, pretrained, _ = train.run_model(tmp_path / "denoise")
    tune = ["--preset", "bart-multi30k", "--init-from", str(tmp_path / "hf")]
    tune += ["--tokenizer", str(tmp_path / "hf" / "tokenizer.json"), "--max-len", "100", "--train-fraction", "0.02"]
    train.main([*tune, "--max-steps", "3", "--eval-every", "3", "--log-every", "1", "--out-dir", str(tmp_path / "mt")])
    assert rows(tmp_path / "mt", "val_bleu") and len(rows(tmp_path / "mt", "loss")) == 3
    cfg, task, model, _ = train.run_model(tmp_path / "mt")
    start = task.build_model()  # the fine-tuning's first weights: the pretrained ones
    assert torch.equal(start.model.shared.weight, pretrained.model.shared.weight)
    assert (
        (task.bos, task.pad, task.eos) == (0, 1, 2) == (start.config.forced_bos_token_id, 1, start.config.eos_token_id)
    )
    b = task.batch([0, 1])
    assert (
        b["input_ids"][:, 0].eq(0).all() and b["labels"][:, 0].eq(0).all() and b["decoder_input_ids"][:, 0].eq(2).all()
    )
    for dec, labels, (_, tgt) in zip(b["decoder_input_ids"], b["labels"], task.train_pairs[:2], strict=True):
        n = int((labels >= 0).sum())  # the labels: <s> tgt (ending in </s>), then -100; shifted right
        assert labels[:n].tolist() == [0, *tgt] and torch.equal(dec[1:n], labels[: n - 1]) and dec[n:].eq(1).all()
    sentences = [s for s, _ in task.valid_text[:4]]
    greedy, beam = task.translate(model, sentences, beam=1), task.translate(model, sentences, beam=2)
    k = max(range(4), key=lambda i: len(task.tok.encode(sentences[i]).ids))  # the batch's length limit is its
    assert len(greedy) == len(beam) == 4 and greedy[k] == task.translate(model, sentences[k : k + 1], beam=1)[0]
    with pytest.raises(ValueError, match=r"--init-from .*: vocabulary 600 and ids .* this task needs"):
        train.main([*tune[:4], "--vocab-size", "500", "--out-dir", str(tmp_path / "other")])  # the dataset's own
    with pytest.raises(ValueError, match=r"max_len \(--max-len 200\) \+ <s> exceeds the model's 128 positions"):
        train.main([*tune, "--max-len", "200", "--out-dir", str(tmp_path / "long")])
    with pytest.raises(FileNotFoundError, match="--tokenizer nowhere.json: no such file"):
        train.main([*tune, "--tokenizer", "nowhere.json", "--out-dir", str(tmp_path / "none")])


BART = ["--preset", "bart-tiny-test", "--log-every", "1", "--eval-every", "5", "--eval-iters", "2", "--dropout", "0"]


@pytest.mark.parametrize("noising", ["infill+permute", pytest.param("rotate", marks=SLOW)])
def test_bart_denoising_matches_hf_bart_and_resumes_exactly(noising, tmp_path):
    """--model bart and --model hf-bart from the same init on the same noised windows (a BART
    vocabulary from `data.py lm --tokenizer bart-bpe<N>`) log the same losses; a resumed run equals
    the uninterrupted one; the export loads in HF; the batches are BART's."""
    import transformers

    import data

    text = "".join(f"line {i % 97}: the quick brown fox {i % 13} jumps.\n" for i in range(3000))
    (tmp_path / "t.txt").write_text(text)
    folder = str(data.prepare_lm(str(tmp_path / "t.txt"), "bart-bpe300", tmp_path / "b"))
    common = [*BART, "--dataset", folder, "--noising", noising]
    for model in ("bart", "hf-bart"):
        train.main([*common, "--model", model, "--max-steps", "10", "--out-dir", str(tmp_path / model)])
    for key in ("loss", "val_loss", "train_eval_loss", "val_loss_other_source"):
        ours, hf = rows(tmp_path / "bart", key), rows(tmp_path / "hf-bart", key)
        assert len(ours) == len(hf) > 0 and ours == pytest.approx(hf, rel=1e-4), key
    assert rows(tmp_path / "bart", "loss")[-1] < rows(tmp_path / "bart", "loss")[0]
    assert not rows(tmp_path / "bart", "val_bpb")  # a denoising loss is no text's own cost: no bits per byte
    # the copy-through diagnostic reads other windows: a different loss (an encoder at work, even at init)
    assert rows(tmp_path / "bart", "val_loss_other_source") != rows(tmp_path / "bart", "val_loss")
    a, b = tmp_path / "a", tmp_path / "b7"
    resumable = [*common, "--save-every", "3", "--dropout", "0.1", "--decay-steps", "12"]
    train.main([*resumable, "--out-dir", str(a), "--max-steps", "7"])
    train.main([*resumable, "--out-dir", str(b), "--max-steps", "5"])
    (b / "ckpt_0000005.pt").unlink()  # killed before the final save: resume from step 3
    train.main(["--out-dir", str(b), "--resume", "--max-steps", "7"])
    assert rows(a, "loss") == rows(b, "loss") and len(rows(a, "loss")) == 7
    train.main(["--out-dir", str(a), "--export-hf", str(tmp_path / "hf")])
    cfg, task, ours, _ = train.run_model(a)
    batch = task.batch([0, 100, 200], "val")
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (hf(**batch).logits - ours(**batch).logits).abs().max() < 1e-4
    V = task.tok.vocab_size
    assert (task.bos, task.pad, task.eos, task.mask, task.vocab_size) == (0, 1, 2, V - 1, V)
    assert task.tok.decode([task.full_stop]) == "\n"  # sentences end at data.py's line breaks
    labels, inputs = batch["labels"], batch["input_ids"]
    assert labels.shape == (3, 32) and labels[:, 0].eq(0).all() and labels[:, -1].eq(2).all()
    assert inputs[:, 0].eq(0).all() and not torch.equal(inputs, labels)
    dec = batch["decoder_input_ids"]
    assert torch.equal(dec[:, 1:], labels[:, :-1]) and dec[:, 0].eq(2).all()
    if noising == "infill+permute":
        assert (inputs == task.mask).any() and not batch["attention_mask"].all()  # spans shorten rows unequally
    with pytest.raises(ValueError, match=r"noising \(--noising\) must be one of"):
        train.main([*common, "--noising", "shuffle", "--out-dir", str(tmp_path / "bad")])
    # --pos-init sinusoidal: both position tables start as the same sinusoids at the init's scale (lr ~0: as built)
    train.main(
        [*common, "--pos-init", "sinusoidal", "--lr", "1e-12", "--max-steps", "1", "--out-dir", str(tmp_path / "s")]
    )
    model = train.run_model(tmp_path / "s")[2].model
    enc, dec = model.encoder.embed_positions.weight[2:], model.decoder.embed_positions.weight[2:]
    pe = T.PositionalEncoding(enc.shape[1], enc.shape[0]).pe
    assert torch.allclose(enc, dec, atol=1e-9) and torch.allclose(enc, pe * (0.02 / pe.std()), atol=1e-9)


def test_a_run_prints_its_evaluations_and_a_summary(lm_data, tmp_path, capsys):
    train.main([*GPT, "--dataset", lm_data, "--max-steps", "10", "--out-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    val = rows(tmp_path / "run", "val_loss")
    assert "step 5: val_loss" in out and "step 10: val_loss" in out and "done: step 10," in out
    meta = json.loads((Path(lm_data) / "meta.json").read_text())  # bits per byte: nats/token x tokens/byte / ln 2
    per_byte = meta["tokens"]["val"] / meta["bytes"]["val"] / math.log(2)
    assert rows(tmp_path / "run", "val_bpb") == pytest.approx([v * per_byte for v in val], rel=1e-12)
    assert f"final (step 10): val_loss {val[-1]:.4g}" in out and f"val_loss {min(val):.4g}" in out.split("best:")[1]
    assert (
        f"checkpoint: {tmp_path / 'run' / 'ckpt_0000010.pt'}" in out
        and "done: step 10" in (tmp_path / "run/log.txt").read_text()
    )


@pytest.mark.slow  # a training run and a figure: `pytest -m 'not slow'` skips it
def test_a_short_run_still_validates_logs_and_plots(lm_data, tmp_path, capsys):
    """--max-steps below --eval-every and --log-every: the last step is logged and validated, the
    summary has its final line, the plot draws the single points; bad input on the command line is
    one line on stderr and exit code 2, an error inside a library keeps its traceback."""
    out = tmp_path / "short"
    args = ["--preset", "shakespeare-char-cpu", "--dataset", lm_data, "--eval-iters", "2", "--out-dir", str(out)]
    train.main([*args, "--max-steps", "3"])  # the preset: --eval-every 250, --log-every 10
    printed = capsys.readouterr().out
    assert rows(out, "loss") and [
        r["step"] for r in map(json.loads, (out / "metrics.jsonl").open()) if "loss" in r
    ] == [3]
    assert len(rows(out, "val_loss")) == 1 and "final (step 3): val_loss" in printed
    assert "settings (else LMConfig's defaults):" in printed and "max_steps=3" in printed and len(printed) < 2000
    assert train.plot(out).exists()
    with pytest.raises(FileNotFoundError, match="--plot: .*none has no metrics.jsonl"):
        train.plot(tmp_path / "none")
    cmd = [sys.executable, "train.py", "--plot", "--out-dir", str(tmp_path / "none")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"train.py: error: --plot: {tmp_path / 'none'} has no metrics.jsonl (not a run folder, or nothing logged yet)"
    ]
    with pytest.raises(json.JSONDecodeError):  # raised inside a library: a bug, with its traceback
        train.cli(lambda: json.loads("{"))


def test_help_describes_every_flag_and_the_preset_family(capsys):
    helps = train.help_lines()
    assert set(helps) == set(train.all_fields()) and all(helps.values())
    with pytest.raises(SystemExit):
        train.main(["--preset", "shakespeare-char-cpu", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--context CONTEXT gpt: tokens per window" in out and "(default 64)" in out
    assert "--lr LR peak" in out and "(default 0.001)" in out and "--beta1 BETA1 AdamW's first-moment" in out
    assert "--label-smoothing" not in out and "--d-model" not in out  # translation's flags are hidden
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--label-smoothing LABEL_SMOOTHING translation: the paper's 0.1 (default 0.1)" in out and "--context" in out
    with pytest.raises(SystemExit):  # finetune_glue.py shows its defaults
        import finetune_glue

        finetune_glue.main(["--help"])
    assert "--lr LR peak learning rate (linear warmup and decay) (default: 2e-05)" in " ".join(
        capsys.readouterr().out.split()
    )


def test_each_family_has_its_own_config_and_refuses_the_others_settings():
    """TrainConfig holds the loop's fields only; a family's config adds its own; every recipe builds its
    family's config; a flag of another family is refused by name; a checkpoint's config of any age
    (one flat dict, older ones with every family's fields) loads into its family's config."""
    loop = {f.name for f in dataclasses.fields(train.TrainConfig)}
    assert not loop & {"d_model", "src_lang", "batch_tokens", "arch", "context", "mask_prob", "noising", "max_len"}
    for name in recipes.PRESETS:
        cfg = train.make_config(name, {})
        assert type(cfg) is train.FAMILIES[cfg.model].Config and set(recipes.PRESETS[name]) <= set(vars(cfg))
    with pytest.raises(ValueError, match=r"--d-model, --beam: not a setting of --model gpt \(`python train.py"):
        train.main(["--preset", "shakespeare-char-cpu", "--show-config", "--d-model", "64", "--beam", "2"])
    with pytest.raises(ValueError, match=r"--context: not a setting of --model transformer"):
        train.make_config("multi30k", {"context": 64})
    with pytest.raises(ValueError, match=r"--model must be one of transformer, bert.*, got 'nope'"):
        train.make_config(None, {"model": "nope"})
    old = {**dataclasses.asdict(recipes.TrainConfig()), "d_model": 256, "context": 64, "glue_task": "sst2"}
    cfg = train.make_config(None, {}, base=old)
    assert type(cfg) is recipes.PaperTranslationConfig and cfg.d_model == 256 and not hasattr(cfg, "context")
    gpt = train.make_config(None, {"lr": 0.5}, base={**old, "model": "gpt"})
    assert gpt.context == 64 and gpt.lr == 0.5 and not hasattr(gpt, "d_model")


def test_show_config_is_the_resolved_config_of_the_family_only(lm_data, tmp_path, capsys):
    shown = train.main(
        ["--preset", "shakespeare-char-cpu", "--show-config", "--beta1", "0.8", "--out-dir", str(tmp_path)]
    )
    assert shown["context"] == 64 and shown["lr"] == 1e-3 and shown["beta1"] == 0.8 and shown["model"] == "gpt"
    assert "d_model" not in shown and "label_smoothing" not in shown and "mask_prob" not in shown
    assert json.loads(capsys.readouterr().out) == shown and not any(tmp_path.iterdir())  # a dry run
    assert {"d_model", "label_smoothing"} <= set(
        train.family_fields("transformer")
    ) and "context" not in train.family_fields("transformer")
    with pytest.raises(ValueError, match=r"beta1 \(--beta1\) must be in \[0, 1\), got 1.5"):
        train.main(["--preset", "shakespeare-char-cpu", "--show-config", "--beta1", "1.5"])
    run = train.Run(
        train.make_config("shakespeare-char-cpu", {"dataset": lm_data, "beta1": 0.8, "out_dir": str(tmp_path / "r")})
    )
    assert run.opt.param_groups[0]["betas"] == (0.8, 0.99)
    run.header()
    logged = json.loads((tmp_path / "r" / "log.txt").read_text())["config"]  # the run's header: its family's fields
    assert logged == {k: v for k, v in dataclasses.asdict(run.cfg).items() if k in train.family_fields("gpt")}


# ------------------------------------------------------------------ the contract, for every family


def toy_task():
    """The toy family of docs/architecture.md, executed from the document itself."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(code, "docs/architecture.md", "exec"), scope)
    return scope["ToyTask"]


def test_toy_family_of_the_docs_trains_end_to_end(tmp_path):
    """The documented toy task through the shared loop: it learns, logs its named metrics, resumes."""
    ToyTask = toy_task()
    cfg = {"batch_size": 32, "lr": 3e-2, "warmup": 1, "schedule": "linear", "max_steps": 40, "eval_every": 20}
    cfg = train.make_config(None, {**cfg, "out_dir": str(tmp_path / "toy"), "log_every": 1}, kind=ToyTask.Config)
    run = train.Run(cfg, task=ToyTask)
    run.train()
    assert rows(tmp_path / "toy", "val_acc")[-1] > 0.8 and rows(tmp_path / "toy", "loss")[-1] < 0.5
    assert len(rows(tmp_path / "toy", "acc")) == 40 and rows(tmp_path / "toy", "tokens_per_s")


@pytest.fixture(scope="module")
def bert_teacher(bert_data, tmp_path_factory):
    """A teacher for --model tinybert: a 4-layer BERT (2 heads, 64 wide) on bert_data's vocabulary, as an HF folder."""
    import bert

    folder = tmp_path_factory.mktemp("teacher")
    tok = Path(bert_data["static"]) / "tokenizer.json"
    vocab = json.loads(tok.read_text())["model"]["vocab"]
    torch.manual_seed(0)
    shape = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128)
    bert.BertModel(bert.BertConfig(vocab_size=len(vocab), pad_token_id=vocab["[PAD]"], **shape)).save_pretrained(folder)
    shutil.copy(tok, folder / "tokenizer.json")
    return str(folder)


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_tinybert_general_distillation_trains_validates_and_exports(bert_data, bert_teacher, tmp_path):
    """--model tinybert: the student learns the teacher's layers on the unmasked text (the loss falls),
    validation logs both parts, --export-hf writes the student as a BERT that transformers loads."""
    import bert

    out = tmp_path / "distill"
    args = ["--preset", "tinybert-tiny-test", "--dataset", bert_data["static"], "--teacher", bert_teacher]
    train.main([*args, "--max-steps", "12", "--eval-every", "12", "--log-every", "1", "--out-dir", str(out)])
    losses = rows(out, "loss")
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0]
    assert rows(out, "val_hidden_loss") and rows(out, "val_attention_loss")
    train.main(["--out-dir", str(out), "--export-hf", str(tmp_path / "hf")])
    student = bert.BertModel.from_pretrained(tmp_path / "hf").eval()
    hf = transformers.BertModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(5, student.config.vocab_size, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(student(ids).last_hidden_state, hf(ids).last_hidden_state, atol=1e-5, rtol=0)
    assert student.config.num_hidden_layers == 2 and (tmp_path / "hf" / "tokenizer.json").exists()
    with pytest.raises(ValueError, match="--teacher"):
        train.main([*args[:4], "--out-dir", str(tmp_path / "none")])


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_unilm_mixed_pretraining_draws_the_papers_shares_per_sample(bert_data, tmp_path):
    """--model unilm: each sample's mode is a pure function of (seed, epoch, index): 1/3 bidirectional,
    1/3 seq2seq, 1/6 each direction; a batch carries each sample's mask; the run trains and validates."""
    import collections

    import unilm

    shares = collections.Counter(tasks.UniLMPretrainingTask.mode(1, 0, i) for i in range(6000))
    for name, want in (
        ("bidirectional", 1 / 3),
        ("seq2seq", 1 / 3),
        ("left-to-right", 1 / 6),
        ("right-to-left", 1 / 6),
    ):
        assert abs(shares[name] / 6000 - want) < 0.02, shares
    cfg = train.make_config(
        "bert-tiny-test", {"model": "unilm", "dataset": bert_data["static"], "out_dir": str(tmp_path)}
    )
    task = tasks.UniLMPretrainingTask(cfg, 1)
    b = task.batch(list(range(8)))
    assert "next_sentence_label" not in b and b["self_attention_mask"].shape == (8, *b["input_ids"].shape[1:] * 2)
    for k in range(8):
        row = (b[n][k : k + 1] for n in ("input_ids", "attention_mask", "token_type_ids"))
        assert torch.equal(b["self_attention_mask"][k], unilm.mode_mask(task.mode(cfg.seed, 0, k), *row)[0])
    out = tmp_path / "run"
    train.main(
        ["--preset", "bert-tiny-test", "--model", "unilm", "--dataset", bert_data["static"], "--max-steps", "8"]
        + ["--eval-every", "8", "--log-every", "1", "--out-dir", str(out)]
    )
    assert rows(out, "val_mlm_acc") and len(rows(out, "loss")) == 8


@pytest.fixture(scope="module")
def family_setups(bert_data, lm_data, bert_teacher):
    """A tiny configuration of every row of train.FAMILIES (a new family adds its own here)."""
    setups = {}
    for name in train.FAMILIES:
        if name == "transformer":
            if (Path(os.environ.get("DATA_DIR", "data")) / "multi30k" / "train.de").exists():
                setups[name] = ("tiny", {"batch_tokens": 512})
        elif name in ("bert", "hf-bert"):
            setups[name] = ("bert-tiny-test", {"dataset": bert_data["static"], "batch_size": 8})
        elif name in ("albert", "hf-albert"):  # the NSP folder: the same head learns NSP
            setups[name] = ("albert-tiny-test", {"dataset": bert_data["static"], "batch_size": 8})
        elif name == "unilm":
            setups[name] = ("bert-tiny-test", {"dataset": bert_data["static"], "batch_size": 8})
        elif name == "tinybert":
            setups[name] = ("tinybert-tiny-test", {"dataset": bert_data["static"], "teacher": bert_teacher})
        elif name in ("gpt", "hf-gpt2"):
            setups[name] = ("shakespeare-char-cpu", {"dataset": lm_data})
        elif name in ("xlnet", "hf-xlnet"):
            setups[name] = ("xlnet-tiny-test", {"dataset": lm_data})
        elif name in ("t5", "hf-t5"):
            setups[name] = ("t5-tiny-test", {"dataset": lm_data})
        elif name in ("bart", "hf-bart"):  # characters: BART's ids after the data's, one sentence per window
            setups[name] = ("bart-tiny-test", {"dataset": lm_data})
        elif name == "unilm-translate":
            if (Path(os.environ.get("DATA_DIR", "data")) / "multi30k" / "train.de").exists():
                setups[name] = ("unilm-multi30k", {"init_from": bert_teacher, "batch_tokens": 512, "max_len": 40})
        elif name in ("t5-translate", "bart-translate"):
            if (Path(os.environ.get("DATA_DIR", "data")) / "multi30k" / "train.de").exists():
                family = name.split("-")[0]  # t5 or bart
                setups[name] = (
                    f"{family}-multi30k",
                    {"arch": f"{family}-tiny-test", "vocab_size": 500, "batch_tokens": 512},
                )
                setups[name][1]["max_len"] = 100  # within bart-tiny-test's 128 positions
        else:
            raise AssertionError(f"train.FAMILIES has {name!r}: add its tiny setup to family_setups")
    return setups


@pytest.mark.parametrize("family", list(train.FAMILIES))
@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_accumulation_equals_one_big_batch_for_every_family(family, family_setups, tmp_path):
    """2 micro-batches of b == 1 batch of 2b (gradients <= 1e-6, the same logged means) for every row
    of the family table: counts from model.counts(batch), sums from model(**batch).sums."""
    if family not in family_setups:
        pytest.skip(lacks("multi30k/"))
    preset, overrides = family_setups[family]
    cfg = train.make_config(preset, {**overrides, "model": family, "dropout": 0.0, "out_dir": str(tmp_path)})
    run = train.Run(cfg)
    b1, b2 = run.epoch_steps()[0][0], run.epoch_steps()[1][0]
    big_row, big_n = run.accumulate_gradients([b1 + b2])
    big = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}
    run.opt.zero_grad(set_to_none=True)
    row, n = run.accumulate_gradients([b1, b2])
    assert n == big_n and row == pytest.approx(big_row, rel=1e-6) and big
    grads = dict(run.model.named_parameters())
    assert max((grads[k].grad - g).abs().max().item() for k, g in big.items()) <= 1e-6
    one = run.task.batch(b1)
    assert {k: float(v) for k, v in run.model.counts(one).items()} == pytest.approx(
        {k: float(v) for k, v in run.model(**one).sums.counts.items()}
    )


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_fsdp_two_processes_equal_one_process_and_resume(lm_data, tmp_path):
    """torchrun --fsdp, 2 CPU processes (gloo): 4 steps, stopped after 2 and resumed from the FSDP
    checkpoint == 1 process accumulating the same 2 micro-batches (weights <= 1e-5, same losses)."""
    common = [*GPT, "--dataset", lm_data, "--dropout", "0", "--eps", "1", "--lr", "0.1", "--warmup", "1"]
    common += ["--batch-size", "8", "--decay-steps", "10", "--save-every", "2", "--eval-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-port=29527"]
    fsdp = tmp_path / "fsdp"
    for steps, resume in (("3", []), ("4", ["--resume"])):
        if resume:
            (fsdp / "ckpt_0000003.pt").unlink()  # as if killed before its final save: resume from step 2
        cmd = [*torchrun, "train.py", *common, "--fsdp", "--max-steps", steps, "--out-dir", str(fsdp), *resume]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    train.main([*common, "--grad-accum", "2", "--max-steps", "4", "--out-dir", str(tmp_path / "one")])
    wf, wo = weights(fsdp), weights(tmp_path / "one")
    init = train.Run(train.make_config("shakespeare-char-cpu", {"dataset": lm_data, "out_dir": str(tmp_path / "i")}))
    assert max((wf[k] - init.model.state_dict()[k]).abs().max().item() for k in wf) > 1e-2
    assert max((wf[k] - wo[k]).abs().max().item() for k in wf) <= 1e-5
    assert len(rows(fsdp, "loss")) == 4
    assert rows(fsdp, "loss") == pytest.approx(rows(tmp_path / "one", "loss"), rel=1e-5)
