"""train.py: accumulation, DDP and resume give the same training; checkpoints, CLI, BLEU."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import require

import train

pytestmark = require("multi30k/train.de", "multi30k/val.en", "multi30k/test_2016_flickr.en")
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "tiny", "--log-every", "1"]


def losses(out_dir):
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def weights(out_dir):
    return train.load_checkpoint(train.latest_checkpoint(out_dir))["model"]


def test_accumulation_equals_one_big_batch():
    run = train.Run(train.make_config("tiny", {"dropout": 0.0, "out_dir": str(Path(os.environ["PREP_DIR"]) / "acc")}))
    steps = run.epoch_steps()
    b1, b2 = steps[0][0], steps[1][0]
    loss_big, n_big = run.accumulate_gradients([b1 + b2])
    big = {n: p.grad.clone() for n, p in run.model.named_parameters()}
    run.opt.zero_grad(set_to_none=True)
    loss_acc, n_acc = run.accumulate_gradients([b1, b2])
    assert n_acc == n_big and loss_acc == pytest.approx(loss_big, rel=1e-6)
    for n, p in run.model.named_parameters():
        assert torch.allclose(p.grad, big[n], atol=1e-7, rtol=1e-5), n


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


def test_averaging_corrupt_checkpoint_and_cli(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0])}
    for i, w in enumerate([a["w"], a["w"] * 3]):
        torch.save({"model": {"w": w}}, tmp_path / f"ckpt_{i:07d}.pt")
    avg = train.average_checkpoints(train.checkpoints(tmp_path))
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
    assert all(f"--{f.name.replace('_', '-')}" in help_text for f in dataclasses.fields(train.TrainConfig))


def test_bleu_scores():
    refs = ["A man in an orange hat starring at something.", "Two dogs play."]
    assert train.bleu_scores(refs, refs, "en")["bleu"] == pytest.approx(100)
    low = train.bleu_scores([r.upper() for r in refs], refs, "en")
    assert low["bleu"] < 10 and low["bleu_lc_tok"] == pytest.approx(100)


def test_each_epoch_has_its_own_order_and_training_stops(tmp_path, monkeypatch):
    cfg = {"out_dir": str(tmp_path), "max_epochs": 2, "log_every": 1000, "max_steps": 200}  # max_steps: a guard
    run = train.Run(train.make_config("tiny", cfg))
    run.train_pairs, run.lengths = run.train_pairs[:300], run.lengths[:300]
    seen = []
    monkeypatch.setattr(run, "train_step", lambda micro: seen.append(micro) or run.optimizer_step() or (0.0, 1.0))
    monkeypatch.setattr(run, "validate", lambda: None)
    run.train()
    per_epoch = len(run.epoch_steps())
    assert len(seen) == 2 * per_epoch and run.epoch == 2 and run.step == 2 * per_epoch
    first, second = seen[:per_epoch], seen[per_epoch:]
    assert first != second  # reshuffled
    assert sorted(i for step in first for b in step for i in b) == sorted(i for step in second for b in step for i in b)
