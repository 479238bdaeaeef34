"""distill.py: TinyBERT's task distillation on the synthetic GLUE of test_glue.py (a teacher
fine-tuned by finetune_glue.py, a smaller student), and its refusals."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from test_glue import WORDS, glue, glue_env  # noqa: F401 (fixtures)

import bert
import distill
import finetune_glue as G

FAST = ["--batch-size", "16", "--max-len", "32", "--log-every", "1"]
SMALL = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48)  # the student's shape


@pytest.fixture(scope="module")
def teacher_and_student(glue, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("distill")
    mp = pytest.MonkeyPatch()
    mp.setenv("DATA_DIR", str(glue["root"]))
    fast = ["--lr", "2e-3", "--batch-size", "16", "--epochs", "4", "--max-len", "32", "--no-submission"]
    G.main(["--init-from", glue["model"], "--out-dir", str(root / "teacher"), "--task", "sst2", *fast])
    mp.undo()
    student = root / "student"  # 2 layers, 24 wide (the teacher: 3, 32), the same 2 heads and vocabulary
    torch.manual_seed(1)
    bert.BertModel(bert.BertConfig(vocab_size=len(WORDS) + 10, max_position_embeddings=64, **SMALL)).save_pretrained(
        student
    )
    shutil.copy(f"{glue['model']}/vocab.txt", student / "vocab.txt")
    return str(root / "teacher/sst2/run/seed1/hf"), str(student)


@pytest.mark.slow  # four training runs: `pytest -m 'not slow'` skips it
def test_two_stages_make_a_student_close_to_its_teacher(glue_env, teacher_and_student, tmp_path):  # noqa: F811
    teacher, student = teacher_and_student
    lrs = ["--intermediate-lr", "2e-3", "--prediction-lr", "2e-3", "--intermediate-epochs", "2"]
    out = distill.main(
        ["--task", "sst2", "--teacher", teacher, "--student", student, "--out-dir", str(tmp_path), *FAST, *lrs]
    )
    run = tmp_path / "sst2/seed1"
    rows = [json.loads(x) for x in (run / "intermediate/metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "hidden_loss" in r and "val_acc" not in r]  # training rows: both parts
    first, last = logged[0], logged[-1]
    assert len(logged) == 40 and last["hidden_loss"] < 0.9 * first["hidden_loss"]  # 3.16 -> 2.45 when written
    assert last["attention_loss"] < 0.5 * first["attention_loss"]  # 3.87 -> 0.76
    pred = [json.loads(x) for x in (run / "prediction/metrics.jsonl").read_text().splitlines()]
    assert any("pred_loss" not in r and "loss" in r for r in pred)  # one loss part: logged as "loss"
    assert out["val_acc"] > 90 and out["runs"][0]["val_acc"] == out["val_acc"]  # the word decides: learnt
    assert (run / "prediction/submission/SST-2.tsv").exists()
    # the student's HF folder: a 2-layer BERT classifier that transformers loads, with the same dev logits
    hf = run / "prediction/hf"
    ours, theirs = (
        m.from_pretrained(hf).eval()
        for m in (bert.BertForSequenceClassification, transformers.BertForSequenceClassification)
    )
    ids = torch.randint(5, ours.config.vocab_size, (3, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-5, rtol=0)
    assert ours.config.num_hidden_layers == 2
    # stage 1 started from the student, stage 2 from stage 1's student; a finished seed is not redone
    configs = [json.loads((run / s / "result.json").read_text()) for s in ("intermediate", "prediction")]
    assert configs[0]["config"]["init_from"] == student and configs[1]["config"]["init_from"] == str(
        run / "intermediate/hf"
    )
    assert configs[1]["glue"]["stage"] == "prediction" and configs[1]["glue"]["teacher"] == teacher
    again = distill.main(
        ["--task", "sst2", "--teacher", teacher, "--student", student, "--out-dir", str(tmp_path), *FAST, *lrs]
    )
    assert again["val_acc"] == out["val_acc"]


def test_bad_teachers_and_arguments_are_refused_before_any_run(glue_env, tmp_path):  # noqa: F811
    def classifier(name, num_labels=2, words=()):  # an HF folder with a classifier, on the task's vocabulary (+ words)
        folder = tmp_path / name
        torch.manual_seed(0)
        config = bert.BertConfig(
            vocab_size=len(WORDS) + 10 + len(words), max_position_embeddings=64, num_labels=num_labels, **SMALL
        )
        bert.BertForSequenceClassification(config).save_pretrained(folder)
        (folder / "vocab.txt").write_text(
            Path(glue_env["model"], "vocab.txt").read_text() + "".join(w + "\n" for w in words)
        )
        return str(folder)

    teacher, student = classifier("teacher"), glue_env["model"]
    base = ["--task", "sst2", "--student", student, "--out-dir", str(tmp_path / "out"), *FAST]
    with pytest.raises(ValueError, match="no classifier"):  # a BERT never fine-tuned on the task
        distill.main([*base, "--teacher", student])
    with pytest.raises(ValueError, match="3 labels, the task has 2"):
        distill.main([*base, "--teacher", classifier("three", 3)])
    with pytest.raises(ValueError, match="another vocabulary"):
        distill.main([*base, "--teacher", classifier("wider", words=["extra"])])
    with pytest.raises(SystemExit, match="temperature"):
        distill.main([*base, "--teacher", teacher, "--temperature", "0"])
    with pytest.raises(SystemExit, match="--teacher"):
        distill.main([*base, "--teacher", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="not a GLUE task"):
        distill.main([*base, "--teacher", teacher, "--task", "sst3"])
    assert not (tmp_path / "out").exists()
