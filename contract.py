"""The contract between the training loop and a model (docs/architecture.md): a model returns its
objective as `Sums` (sums over the batch, each with the name of the count that divides it), gives
those counts from the batch alone (`counts(batch)`), and checks its inputs with named errors; the
loop adds Sums over micro-batches and processes (`Tally`) before dividing.

Here is what two or more families share of it: `Sums`, the loop's `Tally`, `objective_means` for
validation, the objectives of the shared heads (sequence classifiers, seq2seq LM) and the input
checks of the HF conventions (input_ids, attention_mask, labels). Imports only torch."""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Sums(NamedTuple):
    """An objective over one batch as sums, so that micro-batches and processes add up exactly
    before anything is divided: `losses` and `metrics` map a name to (sum, name of its count);
    `counts` are those the model's `counts(batch)` gives before the forward. E.g. BERT's losses
    {"mlm": (sum, "masked"), "nsp": (sum, "sequences")}, counts {"masked": M, "sequences": B, ...}."""

    losses: dict  # name -> (tensor with gradient, count name)
    metrics: dict  # name -> (tensor or number, count name): e.g. correct predictions
    counts: dict  # count name -> int or tensor; "tokens" (inputs seen) gives tokens/s

    def loss(self, totals=None):
        """Each loss part divided by its count (this batch's, or the step's totals), added."""
        return sum(s / (self.counts if totals is None else totals)[c] for s, c in self.losses.values())


# ------------------------------------------------------------------------------ the loop's side


class Tally:
    """Sums added over batches (and processes: `values()` / `load()`) and counts -> a row of means: "loss" (the
    objective), each part as "<name>_loss" when there are several, and the metrics."""

    def __init__(self):
        self.sums, self.per, self.counts, self.losses = {}, {}, {}, set()

    def add(self, sums: Sums, counts=True):
        """Add a batch's sums, and its counts unless the caller knows them already (the loop's totals)."""
        self.losses |= {k + "_loss" for k in sums.losses}
        parts = [(k + "_loss", v) for k, v in sums.losses.items()] + list(sums.metrics.items())
        for key, (value, count) in parts:
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach() if torch.is_tensor(value) else value)
            self.per[key] = count
        for k, n in sums.counts.items() if counts else ():
            self.counts[k] = self.counts.get(k, 0) + float(n)

    def values(self):  # the sums in a fixed order (sorted names), for an all-reduce
        return [self.sums[k] for k in sorted(self.sums)]

    def load(self, values):
        self.sums = dict(zip(sorted(self.sums), values, strict=True))

    def row(self):
        means = {
            k: v / self.counts[self.per[k]] if self.counts[self.per[k]] else math.nan for k, v in self.sums.items()
        }
        row = {"loss": sum(means[k] for k in self.losses)}
        row.update({k: v for k, v in means.items() if len(self.losses) > 1 or k not in self.losses})
        return row


def device_of(model):
    return next(model.parameters()).device


def to_device(batch, device):
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def objective_means(model, batches, autocast):
    """The objective's means (a row: loss, its parts, metrics) over whole batches, e.g. a held-out split."""
    tally, device = Tally(), device_of(model)
    for batch in batches:
        with autocast():
            tally.add(model(**to_device(batch, device)).sums)
    return tally.row()


# ------------------------------------------------------------------ objectives of shared heads


def sequence_counts(batch):
    """What the training loop divides by, from a batch alone: masked tokens (labels != -100),
    sequences, real tokens."""
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    out = {"sequences": len(ids), "tokens": ids.numel() if mask is None else mask.sum()}
    if batch.get("labels") is not None and batch["labels"].dim() == 2:  # token labels (MLM)
        out["masked"] = (batch["labels"] != -100).sum()
    return out


def masked_lm_sums(mlm_logits, targets, pair_logits, batch, pair="nsp", label="next_sentence_label"):
    """Masked-LM pretraining as sums (BERT's MLM + NSP, ALBERT's MLM + SOP): cross-entropy over the
    masked tokens (mlm_logits (M, V) at the labeled positions, targets (M,)) and the pair task's
    (`pair`, labeled by batch[`label`]) over the sequences, with their accuracies; the parts whose
    labels the batch holds."""
    losses, metrics = {}, {}
    if batch.get("labels") is not None:
        losses["mlm"] = (F.cross_entropy(mlm_logits.float(), targets, reduction="sum"), "masked")
        metrics["mlm_acc"] = ((mlm_logits.argmax(-1) == targets).sum(), "masked")
    if batch.get(label) is not None:
        y = batch[label].view(-1)
        losses[pair] = (F.cross_entropy(pair_logits.float(), y, reduction="sum"), "sequences")
        metrics[pair + "_acc"] = ((pair_logits.argmax(-1) == y).sum(), "sequences")
    return Sums(losses, metrics, sequence_counts(batch))


def classifier_loss_sum(logits, labels):
    """Cross-entropy summed over the sequences, or squared error for a regressor (one output)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.view(-1).float(), labels.view(-1).float(), reduction="sum")
    return F.cross_entropy(logits.float(), labels.view(-1), reduction="sum")


def classifier_sums(logits, labels, batch, loss=None):
    """A sequence classifier's objective as sums: the loss (classifier_loss_sum, or `loss` given)
    over the sequences, and the accuracy for classes."""
    loss = classifier_loss_sum(logits, labels) if loss is None else loss
    metrics = {} if logits.shape[-1] == 1 else {"acc": ((logits.argmax(-1) == labels.view(-1)).sum(), "sequences")}
    return Sums({"loss": (loss, "sequences")}, metrics, sequence_counts(batch))


class ClassifierOutput(NamedTuple):
    logits: Tensor  # (B, num_labels)
    loss: Tensor | None = None  # cross-entropy, or MSE when num_labels == 1
    sums: Sums | None = None


def seq2seq_counts(batch):
    """What the loop divides by, from a batch alone: targets (not -100); real tokens, both sides."""
    targets, mask = (batch["labels"] != -100).sum(), batch.get("attention_mask")
    return {"targets": targets, "tokens": (batch["input_ids"].numel() if mask is None else mask.sum()) + targets}


def seq2seq_sums(logits, labels, input_ids, attention_mask=None, label_smoothing=0.0):
    """Cross-entropy of logits (B, T, V) against labels (B, T) (-100: ignored), summed: Sums."""
    flat = logits.flatten(0, 1).float()
    loss = F.cross_entropy(flat, labels.flatten(), ignore_index=-100, reduction="sum", label_smoothing=label_smoothing)
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    return Sums({"loss": (loss, "targets")}, {}, seq2seq_counts(batch))


# ------------------------------------------------------------- inputs, in HF's conventions


def shift_right(labels, start_id, pad_id):
    """(B, T) labels -> decoder inputs: start_id, then labels[:, :-1], with -100 (ignored) -> pad_id."""
    shifted = torch.cat([torch.full_like(labels[:, :1], start_id), labels[:, :-1]], 1)
    return shifted.masked_fill(shifted == -100, pad_id)


def check_labels(labels, input_ids, decoder_input_ids, vocab_size):
    """labels: (B, T) ids in [0, vocab_size) or -100, B the rows of input_ids, T decoder_input_ids' length."""
    B = input_ids.shape[0] if isinstance(input_ids, Tensor) and input_ids.dim() == 2 else None
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.shape[0] != B:
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be (batch={B}, target length), got {got}")
    if decoder_input_ids is not None and decoder_input_ids.shape != labels.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and decoder_input_ids {tuple(decoder_input_ids.shape)} differ")
    if ((labels >= vocab_size) | ((labels < 0) & (labels != -100))).any():
        raise ValueError(f"labels has ids outside [0, vocab_size={vocab_size}) (or -100: ignored)")


def check_ids(ids, name, vocab_size):
    """ids: a (B, T) integer tensor of ids in [0, vocab_size) -> its shape; else an error naming `name`."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        got = f"{ids.dtype} of shape {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"{name} must be a (batch, length) tensor of token ids, got {got}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{name} has token ids outside [0, vocab_size={vocab_size})")
    return ids.shape


def check_mask(mask, name, shape, device):  # None -> all True; else (B, S) of 0/1 (bool or integer)
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(shape):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must have the shape {tuple(shape)} (1 = token, 0 = padding), got {got}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(f"{name} must be bool or integer (1 = token, 0 = padding), got {mask.dtype}")
    return mask.bool()


# --------------------------------------------------- HF baselines under the same contract


class TwinOutput(NamedTuple):
    logits: torch.Tensor | None  # HF's, when its output has `logits`
    sums: Sums | None  # None without labels


class HFTwin(nn.Module):
    """An HF model answering our contract: HF's forward on the batch's inputs (no labels, so that HF
    computes no loss of its own), then, when the batch holds labels, `sums(hf_output, batch)`: our
    family's objective on HF's logits."""

    def __init__(self, hf, counts, sums, inputs):
        super().__init__()
        self.hf, self.counts, self._sums, self.inputs = hf, counts, sums, inputs
        self.config = hf.config  # for layer-wise lr decay (num_hidden_layers)

    def forward(self, **batch):
        out = self.hf(**{k: batch[k] for k in self.inputs if k in batch})
        labeled = any(k not in self.inputs for k in batch)
        return TwinOutput(getattr(out, "logits", None), self._sums(out, batch) if labeled else None)


def hf_twin(ours, sums, inputs):
    """HF's class of `ours` (its config.json's architecture) with exactly its weights, under our contract."""
    import transformers

    config = ours.hf_config()
    architecture = config["architectures"][0]
    hf = getattr(transformers, architecture)(transformers.AutoConfig.for_model(**config))
    weights, first = ours.hf_state_dict(), {}
    for name, p in list(hf.named_parameters(remove_duplicate=False)):  # transformers 5 ties T5 v1.1's head: untie
        other = first.setdefault(id(p), name)
        if other != name and name in weights and other in weights and not torch.equal(weights[name], weights[other]):
            module, leaf = name.rsplit(".", 1)
            setattr(hf.get_submodule(module), leaf, nn.Parameter(p.detach().clone()))
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    state = hf.state_dict()
    loaded = {p.data_ptr() for k, p in state.items() if k not in missing}
    untied = [k for k in missing if state[k].data_ptr() not in loaded]  # tied copies are fine
    if unexpected or untied:
        raise RuntimeError(f"{architecture}: weights did not map: missing {untied}, unexpected {unexpected}")
    return HFTwin(hf, type(ours).counts, sums, inputs)
