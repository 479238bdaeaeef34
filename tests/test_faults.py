"""Faults and bad input: nothing hangs, mixes, loses data or answers for the wrong input.
One test per class of failure (docs/results.md's table), each with several variants."""

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import gpt
import pretraining_data
import train

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_hang():
    """Every test here ends within 60 s: a hang is a failure, not a stuck CI."""

    def fail(*_):
        raise TimeoutError("the test hung")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "t.txt").write_text("".join(f"line {i % 97}: the quick brown fox {i % 13} jumps.\n" for i in range(2000)))
    return str(data.prepare_lm(str(root / "t.txt"), "char", root / "char"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(120)]
    docs = ["\n".join(" ".join(rng.choices(words, k=rng.randint(3, 10))) + " ." for _ in range(8)) for _ in range(30)]
    (root / "corpus.txt").write_text("\n\n".join(docs))
    return root / "corpus.txt"


@pytest.fixture(scope="module")
def bert_folder(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bert") / "prep"
    tok = pretraining_data.train_wordpiece((s for d in data.iter_documents(str(corpus)) for s in d), 150)
    spec = pretraining_data.PretrainingSpec(max_seq_length=32, dupe_factor=1, valid_every=8)
    pretraining_data.prepare_pretraining(str(corpus), out, tok, spec, workers=1)
    return str(out)


GPT = ["--preset", "shakespeare-char-cpu", "--log-every", "1", "--eval-every", "0", "--eval-iters", "2"]
BERT = ["--preset", "bert-tiny-test", "--log-every", "1", "--eval-every", "0"]


def rows(out_dir, key="loss"):
    return [r[key] for r in map(json.loads, (Path(out_dir) / "metrics.jsonl").read_text().splitlines()) if key in r]


# 1 ------------------------------------------------------------------------------------ hangs


def test_an_epoch_without_a_full_step_is_an_error_not_a_hang(lm_folder, bert_folder, tmp_path):
    n = len(pretraining_data.PretrainingData(bert_folder, "train"))
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        train.main([*BERT, "--dataset", bert_folder, "--batch-size", str(8 * n), "--out-dir", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="fewer than one optimizer step"):  # accumulation beyond the epoch
        train.main(
            [*GPT, "--dataset", lm_folder, "--grad-accum", "100000", "--batch-size", "100000"]
            + ["--out-dir", str(tmp_path / "b")]
        )
    assert not (tmp_path / "a" / "metrics.jsonl").exists()


# 2 --------------------------------------------------------------------- one run per folder


def test_a_new_run_refuses_a_folder_that_holds_another(lm_folder, tmp_path):
    out = str(tmp_path / "run")
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "3", "--out-dir", out])
    before = sorted(p.name for p in Path(out).iterdir())
    for extra in ([], ["--max-steps", "2"], ["--lr", "1e-2"]):
        with pytest.raises(ValueError, match="--resume.*--overwrite"):
            train.main([*GPT, "--dataset", lm_folder, "--max-steps", "3", "--out-dir", out, *extra])
    assert sorted(p.name for p in Path(out).iterdir()) == before and len(rows(out)) == 3  # untouched
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", out, "--overwrite"])
    assert len(rows(out)) == 2 and sorted(p.name for p in Path(out).glob("ckpt_*")) == ["ckpt_0000002.pt"]
    Path(out, "log.txt").unlink()
    with pytest.raises(ValueError, match="another run"):  # checkpoints alone also make a run
        train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", out])


def test_nothing_is_replaced_before_the_new_run_is_known_to_start(lm_folder, tmp_path):
    """--overwrite with bad data, or a run folder that is (or holds, or sits in) an input: refused, and
    the old run, the data and the checkpoint to start from are all intact."""
    out = tmp_path / "run"
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", str(out)])
    before = sorted(p.name for p in out.iterdir())
    for dataset in (str(tmp_path / "missing"), str(tmp_path)):  # no such folder; a folder that is no dataset
        with pytest.raises((FileNotFoundError, ValueError)):
            train.main([*GPT, "--dataset", dataset, "--max-steps", "2", "--out-dir", str(out), "--overwrite"])
        assert sorted(p.name for p in out.iterdir()) == before and len(rows(out)) == 2
    data_files = sorted(p.name for p in Path(lm_folder).iterdir())
    for out_dir in (lm_folder, str(Path(lm_folder) / "run")):  # the data itself; a folder inside it
        with pytest.raises(ValueError, match="overlap: a run folder is never an input"):
            train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", out_dir, "--overwrite"])
    assert sorted(p.name for p in Path(lm_folder).iterdir()) == data_files
    train.main(["--out-dir", str(out), "--export-hf", str(out / "hf")])  # an input inside the run folder
    with pytest.raises(ValueError, match="--init-from .* overlap"):
        train.main([*GPT, "--dataset", lm_folder, "--init-from", str(out / "hf"), "--out-dir", str(out), "--overwrite"])
    assert (out / "hf" / "model.safetensors").exists() and len(rows(out)) == 2


@pytest.mark.slow  # two training processes: `pytest -m 'not slow'` skips it (the lock's rules stay quick: below)
def test_two_runs_started_at_once_into_one_folder_one_is_refused(lm_folder, tmp_path):
    """Two real processes into the same new folder: one runs, the other is refused by its run.lock
    (exit 2, naming the process); the lock goes with its run, and a dead process's lock is taken over."""
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py", *GPT, "--dataset", lm_folder, "--max-steps", "400", "--out-dir", str(out)]
    logs = {k: open(tmp_path / f"{k}.log", "w") for k in "ab"}  # noqa: SIM115 (closed with the processes)
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT) for log in logs.values()]
    while all(p.poll() is None for p in procs):
        time.sleep(0.1)
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    while winner.poll() is None and '"loss"' not in (
        (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text() or ""
    ):
        time.sleep(0.1)  # training (SIGTERM then stops it at a checkpoint)
    winner.send_signal(signal.SIGTERM)
    assert loser.wait() == 2 and "is in use: process" in (tmp_path / f"{'ab'[procs.index(loser)]}.log").read_text()
    assert winner.wait() in (0, train.STOPPED) and (out / "log.txt").read_text().count('"command"') == 1
    assert not (out / "run.lock").exists()
    for log in logs.values():
        log.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "run.lock").write_text(str(dead.pid))  # a crashed run's lock
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", str(out), "--overwrite"])
    assert len(rows(out)) == 2 and not (out / "run.lock").exists()
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()  # SIGKILL, not yet reaped: a zombie holds no folder
    time.sleep(0.2)
    (out / "run.lock").write_text(str(killed.pid))
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "3", "--out-dir", str(out), "--overwrite"])
    assert len(rows(out)) == 3 and killed.wait() == -signal.SIGKILL


def test_a_live_processs_lock_refuses_the_folder_a_dead_ones_is_taken_over(lm_folder, tmp_path):
    """The run.lock rules in this process: a live holder refuses the folder (its pid named, nothing
    written), a dead one's lock is taken over, and the run's own lock goes when the run ends."""
    out = tmp_path / "run"
    out.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (out / "run.lock").write_text(str(alive.pid))
    with pytest.raises(ValueError, match=f"is in use: process {alive.pid}"):
        train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    alive.kill()
    alive.wait()  # reaped: its pid is free
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", str(out)])
    assert len(rows(out)) == 2 and not (out / "run.lock").exists()


# 3 ------------------------------------------------------------------------ resume semantics


def test_resume_keeps_the_checkpoints_settings_and_refuses_changes(lm_folder, tmp_path):
    out = str(tmp_path / "run")
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "3", "--out-dir", out])
    for flags, name in (
        (["--lr", "1e-2"], "--lr"),
        (["--preset", "shakespeare-char"], "--preset"),
        (["--warmup", "5"], "--warmup"),
    ):
        with pytest.raises(ValueError, match=name):
            train.main(["--out-dir", out, "--resume", "--max-steps", "5", *flags])
    assert len(rows(out)) == 3
    # the same value is no change; max_steps may grow (a longer run), and the run continues
    run = train.main(["--out-dir", out, "--resume", "--max-steps", "5", "--lr", "1e-3"])
    assert run.step == 5 and len(rows(out)) == 5 and run.cfg.warmup == 100


# 4 ----------------------------------------------------- caches keyed by what produced them


def test_prepared_pretraining_data_is_keyed_by_its_tokenizer(corpus, bert_folder, tmp_path):
    out = tmp_path / "prep"
    spec = pretraining_data.PretrainingSpec(max_seq_length=32, dupe_factor=1, valid_every=8)
    texts = lambda: (s for d in data.iter_documents(str(corpus)) for s in d)  # noqa: E731
    pretraining_data.prepare_pretraining(
        str(corpus), out, pretraining_data.train_wordpiece(texts(), 150), spec, workers=1
    )
    other = pretraining_data.train_wordpiece(texts(), 140)
    with pytest.raises(ValueError, match="another tokenizer or other settings"):
        pretraining_data.prepare_pretraining(str(corpus), out, other, spec, workers=1)
    with pytest.raises(ValueError, match="another tokenizer or other settings"):
        pretraining_data.prepare_pretraining(
            str(corpus),
            out,
            pretraining_data.train_wordpiece(texts(), 150),
            dataclasses.replace(spec, max_seq_length=40),
            workers=1,
        )
    # the data's tokenizer.json replaced by hand: training refuses it
    other.save(str(out / "tokenizer.json"))
    with pytest.raises(ValueError, match="tokenizer.json is not the one"):
        train.main([*BERT, "--dataset", str(out), "--out-dir", str(tmp_path / "run")])


def test_init_from_with_another_vocabulary_is_refused(bert_folder, tmp_path):
    import bert

    folder = tmp_path / "hf"
    ours = bert.BertForPreTraining(bert.BertConfig.from_preset("bert-tiny", vocab_size=150))
    ours.save_pretrained(folder)
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"x{i}" for i in range(145)])
    )
    with pytest.raises(ValueError, match="--init-from.*another vocabulary"):
        train.main([*BERT, "--dataset", bert_folder, "--init-from", str(folder), "--out-dir", str(tmp_path / "r")])


# 5 --------------------------------------------------------- the wrong kind of prepared data


def test_a_folder_of_another_kind_is_named(lm_folder, bert_folder, tmp_path):
    with pytest.raises(ValueError, match="--dataset.*data.py bert.*data.py lm"):
        train.main([*GPT, "--dataset", bert_folder, "--out-dir", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="--dataset.*data.py lm.*data.py bert"):
        train.main([*BERT, "--dataset", lm_folder, "--out-dir", str(tmp_path / "b")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--dataset.*meta.json"):
        train.main([*GPT, "--dataset", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "c")])


# 6 ---------------------------------------------------------------------- numbers checked once


@pytest.mark.parametrize(
    "flags, name",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-4"], "--batch-size"),
        (["--grad-accum", "0"], "--grad-accum"),
        (["--lr", "0"], "--lr"),
        (["--eval-iters", "0"], "--eval-iters"),
        (["--max-steps", "-1"], "--max-steps"),
        (["--keep-last", "-1"], "--keep-last"),
        (["--dropout", "1.5"], "--dropout"),
        (["--warmup", "-3"], "--warmup"),
        (["--schedule", "step"], "--schedule"),
        (["--min-lr", "0.5"], "--min-lr"),
    ],
)
def test_settings_are_checked_before_any_work(flags, name, lm_folder, tmp_path):
    with pytest.raises(ValueError, match=name):
        train.main([*GPT, "--dataset", lm_folder, "--out-dir", str(tmp_path / "run"), *flags])
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_device_cuda_without_a_gpu_an_unknown_model_or_arch_leave_no_folder(lm_folder, tmp_path):
    with pytest.raises(ValueError, match="--device cuda: this machine has no CUDA device"):
        train.main([*GPT, "--dataset", lm_folder, "--out-dir", str(tmp_path / "run"), "--device", "cuda"])
    with pytest.raises(ValueError, match="--model must be one of transformer, .* got 'gpt3'"):
        train.main(["--model", "gpt3", "--out-dir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match=r"unknown arch 'gpt5' \(a key of gpt.PRESETS, train.py's --arch\)"):
        train.main([*GPT, "--dataset", lm_folder, "--arch", "gpt5", "--out-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_keep_last_never_deletes_every_checkpoint_and_sampling_flags_are_checked(lm_folder, tmp_path):
    out = str(tmp_path / "run")
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", out])
    for flags, name in (
        (["--max-new-tokens", "-3"], "--max-new-tokens"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-k", "0"], "--top-k"),
    ):
        with pytest.raises(ValueError, match=name):
            train.main(["--out-dir", out, "--sample", "line", *flags])
    assert list(Path(out).glob("ckpt_*.pt"))
    for preset in ("t5-tiny-test", "bart-tiny-test"):  # encoder-decoders: one sentence, not a crash inside generate
        out = str(tmp_path / preset)
        train.main(["--preset", preset, "--dataset", lm_folder, "--max-steps", "1", "--out-dir", out])
        with pytest.raises(ValueError, match=r"--sample: .* is a --model (t5|bart) run; --sample continues a prompt"):
            train.main(["--out-dir", out, "--sample", "line"])


def test_objective_and_generation_arguments_are_checked_by_name(lm_folder, tmp_path):
    """Issue 35, class 6: values the builders and generate() took silently or failed on deep inside."""
    import bart
    import decoding
    import t5

    for temperature in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            decoding.check_sampling(temperature, 5, None)
    for density, mean in ((-0.1, 3.0), (1.5, 3.0), (0.15, 0)):
        with pytest.raises(ValueError, match="noise_density must be in .0, 1. and mean_noise_span_length >= 1"):
            t5.span_corruption(np.arange(50), np.random.default_rng(0), 1000, 1, density, mean)
    for doc in ([], [0], [0, 2]):
        with pytest.raises(ValueError, match="add_noise: a document is <s> ... </s> with at least one token inside"):
            bart.add_noise(np.array(doc, dtype=np.int64), np.random.default_rng(0), "infill", 3, -1, 100)
    model = bart.BartForConditionalGeneration(bart.BartConfig.from_preset("bart-tiny-test", vocab_size=50)).eval()
    with pytest.raises(ValueError, match=r"forced_bos_token_id must be an id in \[0, vocab_size=50\), got 500"):
        model.generate(torch.tensor([[5, 6, 2]]), max_new_tokens=3, forced_bos_token_id=500)
    small_t5 = t5.T5ForConditionalGeneration(t5.T5Config.from_preset("t5-tiny-test", vocab_size=50)).eval()
    small_gpt = gpt.GPT(gpt.GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)).eval()
    for generate in (model.generate, small_t5.generate, lambda x: small_gpt.generate(x, 3)):
        with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\) with length >= 1, got shape"):
            generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"context \(--context 2\) must be >= 3 for BART"):
        train.main(["--preset", "bart-tiny-test", "--dataset", lm_folder, "--context", "2", "--out-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before the run folder was made


def test_data_py_lm_checks_before_it_replaces_a_prepared_folder(lm_folder, tmp_path):
    """Issue 35, classes 1 and 6: an empty corpus into a prepared folder leaves its files as they were
    (no .tmp left); --val-fraction outside (0, 1) is refused before any folder is made."""
    out, text = tmp_path / "lm", tmp_path / "text.txt"
    text.write_text("a few words of text .\n" * 20)
    data.prepare_lm(str(text), "char", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    text.write_text("")  # the same source, emptied
    with pytest.raises(ValueError, match="text.txt: no text to train on"):
        data.prepare_lm(str(text), "char", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"other settings \(source\)"):  # another source: refused first
        data.prepare_lm(str(tmp_path / "empty.txt"), "char", out)
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"--val-fraction must be in \(0, 1\), got"):
            data.prepare_lm(str(tmp_path / "empty.txt"), "char", tmp_path / "new", val_fraction=fraction)
    assert not (tmp_path / "new").exists()


# 7 --------------------------------------------------------------- errors that name the file


def test_errors_name_the_file(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.txt").write_text("one sentence .\nanother one .\n")
    (folder / "b.txt").write_bytes(b"caf\xe9 latin-1 .\n")
    with pytest.raises(ValueError, match=r"b\.txt.*UTF-8"):
        list(data.iter_documents(str(folder)))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty\.txt.*no text"):
        data.prepare_lm(str(tmp_path / "empty.txt"), "char", tmp_path / "lm")
    model = gpt.GPT(gpt.GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    ids = torch.randint(0, 20, (2, 8))
    with pytest.raises(ValueError, match="targets.*vocab_size=20"):
        model(ids, targets=ids + 20)
    with pytest.raises(ValueError, match="labels.*vocab_size=20"):
        model(ids, labels=ids + 20)
    model.save_pretrained(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        gpt.GPT.from_pretrained(tmp_path / "hf")


# 8 ------------------------------------------------------------- the wrong model for a run


def test_resume_with_another_model_names_the_run(lm_folder, tmp_path):
    out = str(tmp_path / "run")
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", out])
    with pytest.raises(ValueError, match="--model.*gpt run"):
        train.main(["--out-dir", out, "--resume", "--model", "bert"])
    with pytest.raises(ValueError, match="--arch.*shakespeare-char-cpu"):
        train.main(["--out-dir", out, "--resume", "--arch", "gpt2"])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.main(["--out-dir", str(tmp_path / "nothing"), "--resume"])


# kill -9 during checkpoint writes --------------------------------------------------------


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_killed_during_saves_the_latest_checkpoint_is_whole_and_resumes(lm_folder, tmp_path):
    """A run saving every step, killed (SIGKILL) at random moments a few times: the latest checkpoint
    always loads, and --resume goes on from it."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    cmd = [sys.executable, "train.py", *GPT, "--dataset", lm_folder, "--save-every", "1", "--max-steps", "400"]
    for k in range(3):
        args = [*cmd, "--out-dir", str(out)] + (["--resume"] if k else [])
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180  # a loaded machine starts slowly: wait for a first checkpoint
        while not list(out.glob("ckpt_*.pt")) and time.time() < deadline:
            time.sleep(0.05)
        assert list(out.glob("ckpt_*.pt")), "the run saved no checkpoint in 180 s"
        time.sleep(rng.uniform(0.2, 1.0))
        proc.kill()
        proc.wait()
        latest = train.latest_checkpoint(out)
        assert train.load_checkpoint(latest)["position"]["step"] == int(latest.stem.split("_")[1])
    step = train.load_checkpoint(train.latest_checkpoint(out))["position"]["step"]
    assert train.main(["--out-dir", str(out), "--resume", "--max-steps", str(step + 1)]).step == step + 1


def test_an_export_replaces_only_an_export(lm_folder, tmp_path):
    """--export-hf writes aside and moves in; it refuses a folder holding anything but an export,
    and is not redone while source.json names the same checkpoint."""
    out = str(tmp_path / "run")
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", out])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds other files"):
        train.main(["--out-dir", out, "--export-hf", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    folder = train.export_hf(out, tmp_path / "hf")
    made = (folder / "model.safetensors").stat().st_mtime_ns
    assert train.export_hf(out, tmp_path / "hf") == folder and (folder / "model.safetensors").stat().st_mtime_ns == made
    assert not list(tmp_path.glob(".hf.tmp"))


# issue 35, classes 3-7 ------------------------------------------------------------------------


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_a_prepared_folder_is_never_overwritten_by_another_kind_or_tokenizer(corpus, lm_folder, bert_folder, tmp_path):
    """Class 3: data.py lm into a BERT folder or an LM folder of another tokenizer (or source), data.py bert into an
    LM folder or a folder holding a foreign tokenizer.json, are refused with every file as it was; the same
    settings again are accepted, and an interrupted data.py bert cannot be resumed with other settings."""
    lm, prep = tmp_path / "lm", tmp_path / "bert"
    shutil.copytree(lm_folder, lm)
    shutil.copytree(bert_folder, prep)
    text = str(Path(lm_folder).parent / "t.txt")  # the lm_folder fixture's corpus
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tokenizer.json").write_text("{}")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"--out .*bert holds `data.py bert` data"):
        data.prepare_lm(text, "char", prep)
    with pytest.raises(ValueError, match=r"another tokenizer or other settings \(tokenizer\)"):
        data.prepare_lm(text, "bpe300", lm)
    with pytest.raises(ValueError, match=r"other settings \(source\)"):
        data.prepare_lm(str(corpus), "char", lm)
    with pytest.raises(ValueError, match=r"--out .*lm holds `data.py lm` data"):
        data.main(["bert", "--source", str(corpus), "--tokenizer", str(prep / "tokenizer.json"), "--out", str(lm)])
    with pytest.raises(ValueError, match=r"holds tokenizer.json but no meta.json"):
        data.prepare_lm(text, "char", tmp_path / "other")
    assert snapshot(tmp_path) == before
    assert data.load_lm(data.prepare_lm(text, "char", lm))[0]["settings"]["tokenizer"] == "char"  # the same again
    # an interrupted data.py bert: meta.json says unfinished; training refuses it, other settings are refused
    spec = pretraining_data.PretrainingSpec(max_seq_length=32, dupe_factor=1, valid_every=8)
    tok = pretraining_data.bert_tokenizer(prep)
    meta = json.loads((prep / "meta.json").read_text())
    (prep / "meta.json").write_text(json.dumps({"kind": "bert", "settings": meta["settings"], "finished": False}))
    with pytest.raises(ValueError, match="unfinished.*run that command again"):
        pretraining_data.PretrainingData(prep)
    with pytest.raises(ValueError, match=r"other settings \(spec\)"):
        pretraining_data.prepare_pretraining(
            str(corpus), prep, tok, dataclasses.replace(spec, dupe_factor=2), workers=1
        )
    assert pretraining_data.prepare_pretraining(str(corpus), prep, tok, spec, workers=1)["samples"] == meta["samples"]


def test_files_that_disagree_with_their_metadata_are_named_when_opened(lm_folder, bert_folder, tmp_path):
    """Class 4: a train.bin of half its tokens, one byte too long, or holding ids beyond the vocabulary; a shard
    array of objects, or cut short; a checkpoint of another run copied into a run folder."""
    for k, (damage, message) in enumerate(
        [
            (lambda b: b[: len(b) // 2], r"train.bin is [\d,]+ bytes, meta.json records"),
            (lambda b: b + b"\0", r"train.bin is [\d,]+ bytes"),
            (lambda b: np.full(len(b) // 2, 60000, np.uint16).tobytes(), "ids beyond the vocabulary"),
        ]
    ):
        lm = tmp_path / f"lm{k}"
        shutil.copytree(lm_folder, lm)
        (lm / "train.bin").write_bytes(damage((lm / "train.bin").read_bytes()))
        with pytest.raises(ValueError, match=message):
            data.load_lm(lm)
    for name, array, message in [
        ("ids.npy", np.array([{"a": 1}], dtype=object), r"ids.npy is not an array of `data.py bert`"),
        ("mlm_labels.npy", np.zeros(1, np.uint16), "disagree in size"),
        ("ids.npy", np.zeros(0, np.float32), "float32"),
    ]:
        prep = tmp_path / f"bert-{name}-{array.dtype}"
        shutil.copytree(bert_folder, prep)
        np.save(prep / "train-00000" / name, array, allow_pickle=True)
        with pytest.raises(ValueError, match=message):
            pretraining_data.PretrainingData(prep)
    run, other = tmp_path / "run", tmp_path / "other"
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "2", "--out-dir", str(run)])
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "3", "--lr", "2e-4", "--out-dir", str(other)])
    shutil.copy(other / "ckpt_0000003.pt", run)
    for action in (["--resume"], ["--evaluate"], ["--export-hf", str(tmp_path / "hf")]):
        with pytest.raises(ValueError, match=r"checkpoints of different runs: ckpt_0000003.pt differs .* in lr"):
            train.main(["--out-dir", str(run), *action])


def test_caches_are_keyed_by_the_corpus_contents(tmp_path, monkeypatch):
    """Class 5: a corpus edited in place (same path) gets a tokenizer of its new words, for BERT's WordPiece and
    for the translation vocabulary; an unchanged corpus reuses the cached one."""
    monkeypatch.setenv("PREP_DIR", str(tmp_path / "prep"))
    text = tmp_path / "corpus.txt"
    text.write_text("alpha beta gamma .\ndelta alpha beta .\n")
    first = pretraining_data.bert_tokenizer(source=str(text), vocab_size=60)
    assert pretraining_data.bert_tokenizer(source=str(text), vocab_size=60).to_str() == first.to_str()
    text.write_text("zebra yak xylophone .\nzebra yak quartz .\n")
    assert "zebra" in pretraining_data.bert_tokenizer(source=str(text), vocab_size=60).get_vocab()
    (tmp_path / "multi30k").mkdir()
    for lang, words in (("de", "ein hund läuft"), ("en", "a dog runs")):
        (tmp_path / "multi30k" / f"train.{lang}").write_text(f"{words} .\n" * 20)
    assert "hund" in "".join(data.translation_tokenizer("multi30k", vocab_size=60, root=tmp_path).get_vocab())
    (tmp_path / "multi30k" / "train.de").write_text("eine katze schläft .\n" * 20)
    assert "katze" in "".join(data.translation_tokenizer("multi30k", vocab_size=60, root=tmp_path).get_vocab())


def test_data_values_are_checked_before_any_work(corpus, tmp_path):
    """Class 6: --vocab-size 0 or negative, --tokenizer bpe0 / unigram50 / bart-bpe10, a whitespace-only corpus,
    a dev.tsv without its label column: each named before anything is written."""
    for size in ("0", "-3"):
        with pytest.raises(ValueError, match=f"--vocab-size must exceed the 5 specials, got {size}"):
            data.main(["bert", "--source", str(corpus), "--out", str(tmp_path / "b"), "--vocab-size", size])
    for kind, least in (("bpe0", 257), ("unigram50", 104), ("bart-bpe10", 261)):
        with pytest.raises(ValueError, match=f"--tokenizer {kind}: .* at least {least} tokens"):
            data.prepare_lm(str(corpus), kind, tmp_path / "lm")
    (tmp_path / "blank.txt").write_text("   \n\n\t  \n" * 50)
    with pytest.raises(ValueError, match="blank.txt: no text to train on"):
        data.prepare_lm(str(tmp_path / "blank.txt"), "char", tmp_path / "lm")
    assert not any(p.is_file() for p in tmp_path.rglob("*") if p.name != "blank.txt")
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "dev.tsv").write_text("sentence\tindex\na fine film\t0\n")
    with pytest.raises(ValueError, match=r"dev.tsv: the header has no label column 'label'"):
        data.read_glue("sst2", "dev", tmp_path)
    (glue / "test.tsv").write_text("index\tsentence\n0\ta fine film\n")
    assert data.read_glue("sst2", "test", tmp_path)[0]["label"] is None  # test files have no labels


def test_corrupt_files_and_foreign_runs_are_named(lm_folder, tmp_path):
    """Class 7: a corrupt meta.json (for training and for data.py's --out), a corrupt tokenizer.json given with
    --tokenizer or inside a folder, --init-from a GPT run (or a GPT HF folder) into GLUE, a checkpoint holding a
    pickled object: one sentence naming the file or flag (never torch's advice to unpickle), before any work."""
    import finetune_glue

    lm = tmp_path / "lm"
    shutil.copytree(lm_folder, lm)
    (lm / "meta.json").write_text('{"kind": "lm", "tok')
    with pytest.raises(ValueError, match=r"--dataset: .*meta.json is not valid JSON"):
        train.main([*GPT, "--dataset", str(lm), "--out-dir", str(tmp_path / "r")])
    with pytest.raises(ValueError, match=r"--out: .*meta.json is not valid JSON"):
        data.prepare_lm(str(tmp_path / "x.txt"), "char", lm)
    (tmp_path / "tokenizer.json").write_text("not json at all")
    with pytest.raises(ValueError, match=r"--tokenizer .*tokenizer.json: not an HF tokenizer.json"):
        data.prepare_lm(lm_folder, str(tmp_path / "tokenizer.json"), tmp_path / "lm2")
    with pytest.raises(ValueError, match=r"--tokenizer .*tokenizer.json: not an HF tokenizer.json"):
        pretraining_data.bert_tokenizer(tmp_path)
    run = tmp_path / "gpt-run"
    train.main([*GPT, "--dataset", lm_folder, "--max-steps", "1", "--out-dir", str(run)])
    with pytest.raises(ValueError, match=r"--init-from .*gpt-run is a --model gpt run, not one that --model bert"):
        finetune_glue.main(["--task", "sst2", "--init-from", str(run), "--out-dir", str(tmp_path / "glue")])
    assert not (tmp_path / "glue").exists()
    gpt.GPT(gpt.GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)).save_pretrained(tmp_path / "g")
    shutil.copy(tmp_path / "tokenizer.json", tmp_path / "g")
    cfg = finetune_glue.FinetuneConfig(model="bert", init_from=str(tmp_path / "g"), out_dir=str(tmp_path / "t"))
    with pytest.raises(ValueError, match=r"--init-from .*g: a gpt2 model, not --model bert's"):
        finetune_glue.GlueTask(cfg, finetune_glue.GlueConfig("sst2"), 1)
    with pytest.raises(ValueError, match="--evaluate scores the run as trained: --lr is not one of its flags"):
        train.main(["--out-dir", str(run), "--evaluate", "--lr", "0.1"])  # was silently ignored
    shutil.copytree(lm_folder, tmp_path / "other-data")
    scored = train.main(["--out-dir", str(run), "--evaluate", "--dataset", str(tmp_path / "other-data")])
    assert json.loads((run / "valid_results_other-data.json").read_text()) == scored  # beside the run's own
    ck = torch.load(run / "ckpt_0000001.pt", weights_only=True)
    torch.save({**ck, "args": argparse.Namespace(lr=0.1)}, run / "ckpt_0000001.pt")  # a pickled object
    with pytest.raises(RuntimeError, match=r"ckpt_0000001.pt: refused as unsafe") as e:
        train.main(["--out-dir", str(run), "--resume"])
    assert "weights_only" not in str(e.value)
