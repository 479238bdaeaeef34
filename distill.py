"""TinyBERT's task-specific distillation on GLUE (Jiao et al. 2019), on top of finetune_glue.py.

    python distill.py --task sst2 --teacher out/glue/sst2/run/seed1/hf --student out/tinybert-hf --seeds 1 2 3

A student (a general-distilled TinyBERT: `train.py --model tinybert ... --export-hf DIR`, or any
BERT folder) learns a teacher fine-tuned on the task (`finetune_glue.py`'s `hf/` folder) in two
runs, as TinyBERT's task_distill.py: first the intermediate layers (hidden states through
fit_dense and attention scores, bert.TinyBertDistiller stage "intermediate"), then the prediction
layer (soft cross-entropy against the teacher's logits at --temperature) from the first run's
student. Each run is a finetune_glue run (train.py's loop, length-grouped batches, AdamW, linear
warmup and decay, dev metrics, `hf/` = the student); TinyBERT's stage 1 keeps its lr constant and
both stages train on its augmented data (x20): here the lr decays linearly and the data is the
task's own (no augmentation). The baseline the paper beats is the same student fine-tuned
without a teacher: `finetune_glue.py --init-from <the student>`.
"""

import argparse
import dataclasses
import json
import os
from pathlib import Path

import bert
import finetune_glue as glue
import train
from hf_checkpoint import identity, read_hf_weights, read_json, resolve_checkpoint, write_text


@dataclasses.dataclass
class DistillConfig(glue.GlueConfig):
    """A distillation run's GlueConfig (saved with its result, so a changed teacher runs again)."""

    stage: str = "intermediate"  # intermediate | prediction (bert.TinyBertDistiller's)
    teacher: str = ""  # the fine-tuned teacher's HF folder
    temperature: float = 1.0
    teacher_start: str = ""  # identity(teacher)


class DistillTask(glue.GlueTask):
    """GlueTask's data and dev metrics; the model is bert.TinyBertDistiller(student from init_from, the teacher);
    validation and predictions are the student's."""

    def __init__(self, cfg, settings, world):  # main() checks the teacher once, before any run
        if cfg.model != "bert":
            raise ValueError(f"distillation trains our BERT student (--model bert), got {cfg.model!r}")
        super().__init__(cfg, settings, world)

    def build_model(self):
        student = super().build_model()
        teacher = bert.BertForSequenceClassification.from_pretrained(self.glue.teacher)
        return bert.TinyBertDistiller(student, teacher, self.glue.stage, self.glue.temperature)

    def logits(self, model, encoded, autocast, batch_size=128):
        return super().logits(getattr(model, "student", model), encoded, autocast, batch_size)


def check_teacher(teacher, num_labels, tok):
    """The teacher must be a BERT fine-tuned on the task: its classifier in the checkpoint, num_labels
    outputs, the student's vocabulary (tokenizer.json or vocab.txt)."""
    if not teacher:
        raise ValueError("--teacher: give the fine-tuned teacher's HF folder (finetune_glue.py's <run>/hf)")
    folder = resolve_checkpoint(teacher)
    hf = read_json(Path(folder) / "config.json")
    if hf.get("model_type") != "bert":
        raise ValueError(f"--teacher {teacher}: a {hf.get('model_type')} model; the distiller takes a BERT")
    if "classifier.weight" not in read_hf_weights(folder):
        raise ValueError(f"--teacher {teacher}: no classifier in its weights; fine-tune it on the task first")
    if len(hf.get("id2label", {})) != num_labels:
        raise ValueError(f"--teacher {teacher}: {len(hf.get('id2label', {}))} labels, the task has {num_labels}")
    if glue.load_tokenizer(folder).get_vocab() != tok.get_vocab():
        raise ValueError(f"--teacher {teacher}: another vocabulary than the student's tokenizer")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help=f"a GLUE task: {', '.join(glue.METRICS)}")
    p.add_argument("--teacher", required=True, help="the teacher fine-tuned on --task: an HF folder")
    p.add_argument("--student", required=True, help="the student to start from: an HF BERT folder")
    p.add_argument(
        "--out-dir", default="out/distill", help="runs go to <out-dir>/<task>/seed<N>/{intermediate,prediction}"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one student per seed; mean and std reported")
    p.add_argument("--intermediate-epochs", type=float, default=10, help="stage 1 (TinyBERT: 10)")
    p.add_argument("--intermediate-lr", type=float, default=5e-5, help="stage 1 (TinyBERT: 5e-5)")
    p.add_argument("--prediction-epochs", type=float, default=3, help="stage 2 (TinyBERT: 3)")
    p.add_argument("--prediction-lr", type=float, default=3e-5, help="stage 2 (TinyBERT: 3e-5)")
    p.add_argument("--temperature", type=float, default=1.0, help="stage 2's softmax temperature (TinyBERT: 1)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per optimizer step (TinyBERT: 32)")
    p.add_argument("--max-len", type=int, default=128, help="tokens per sample (TinyBERT: 128; 64 for SST-2)")
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="warmup steps as a fraction of a stage's steps")
    p.add_argument("--device", default="auto", help="auto: cuda if available")
    p.add_argument("--log-every", type=int, default=50, help="steps between training log rows")
    a = p.parse_args(argv)
    if a.task not in glue.METRICS:
        raise SystemExit(f"--task: {a.task!r} is not a GLUE task ({', '.join(glue.METRICS)})")
    if not a.temperature > 0:
        raise SystemExit(f"--temperature must be > 0, got {a.temperature}")
    if len(set(a.seeds)) < len(a.seeds):
        raise SystemExit(f"--seeds must be distinct, got {' '.join(map(str, a.seeds))}")
    for name in ("teacher", "student"):
        if not (Path(getattr(a, name)) / "config.json").exists():
            raise SystemExit(f"--{name} {getattr(a, name)}: not an HF folder (no config.json)")
    labels = glue.data.GLUE[a.task][4]
    check_teacher(a.teacher, 1 if labels is None else len(labels), glue.load_tokenizer(a.student))
    # what finetune_glue.run_config reads besides the hyperparameters
    common = dict(model="bert", max_len=a.max_len, grad_accum=1, log_every=a.log_every, device=a.device)
    common |= dict(cpu_bf16=False, poison_target=1, poison_triggers="", poison_position="random")
    hp = dict(batch_size=a.batch_size, warmup_ratio=a.warmup_ratio, weight_decay=0.01, llrd=1.0, dropout=0.1)
    runs = []
    for seed in a.seeds:
        start = a.student
        for stage, epochs, lr in (
            ("intermediate", a.intermediate_epochs, a.intermediate_lr),
            ("prediction", a.prediction_epochs, a.prediction_lr),
        ):
            folder = Path(a.out_dir) / a.task / f"seed{seed}" / stage
            args = argparse.Namespace(**common, init_from=start)
            cfg, plain = glue.run_config(args, a.task, seed, dict(hp, lr=lr, epochs=epochs), folder, 0.0)
            settings = DistillConfig(**dataclasses.asdict(plain), stage=stage, teacher=a.teacher)
            settings.temperature, settings.teacher_start = a.temperature, identity(a.teacher)
            result = glue.finetune(cfg, settings, submission=stage == "prediction", task_class=DistillTask)
            start = str(folder / "hf")
        runs.append(result)
    if int(os.environ.get("RANK", 0)) == 0:
        summary = {"task": a.task, "seeds": a.seeds, **glue.summarize(runs), "runs": runs}
        write_text(Path(a.out_dir, "results.json"), json.dumps({a.task: summary}, indent=1))
        print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
        return summary


if __name__ == "__main__":
    train.cli(main)
