"""Optimizers and learning-rate schedules, for the training loop and the paper's model: the
schedules of the recipes (the paper's noam, BERT's linear, nanoGPT's cosine) as factors of the
peak lr, AdamW parameter groups (no decay on biases and norms; layer-wise lr decay), the optimizer
by name, and nanoT5's AdamWScale. Imports only torch."""

import math
import re

import torch


def noam_lr(step, d_model, warmup=4000):
    """The paper's learning rate: d^-0.5 * min(step^-0.5, step * warmup^-1.5), steps from 1."""
    step = max(step, 1)
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def noam_scheduler(optimizer, d_model, warmup=4000):
    """LambdaLR multiplying the optimizer's lr (set it to 1.0, or a scale factor) by noam_lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: noam_lr(i + 1, d_model, warmup))


def lr_factor(cfg, per_epoch=0):
    """The learning rate at optimizer step i (0-based) as a fraction of cfg.lr (per_epoch: steps in an epoch)."""
    if cfg.schedule == "noam":  # the paper: linear warmup, then inverse square root, peak at `warmup`
        peak = noam_lr(cfg.warmup, 1, cfg.warmup)  # d^-0.5 cancels: cfg.lr is the peak
        return lambda i: noam_lr(i + 1, 1, cfg.warmup) / peak
    if cfg.schedule == "linear":  # BERT: linear warmup, then linear decay to 0
        total = cfg.decay_steps or cfg.max_steps or cfg.max_epochs * per_epoch
        if total <= cfg.warmup:
            raise ValueError(f"schedule linear: decay_steps or max_steps ({total}) must exceed warmup ({cfg.warmup})")
        return lambda i: min((i + 1) / max(cfg.warmup, 1), max(0.0, (total - i - 1) / (total - cfg.warmup)))
    if cfg.schedule == "cosine":  # nanoGPT: linear warmup, cosine down to min_lr at decay_steps, then flat
        total, floor = cfg.decay_steps or cfg.max_steps or cfg.max_epochs * per_epoch, cfg.min_lr / cfg.lr

        def cosine(i):
            if i < cfg.warmup:
                return (i + 1) / (cfg.warmup + 1)
            ratio = min(1.0, (i - cfg.warmup) / max(1, total - cfg.warmup))
            return floor + 0.5 * (1 + math.cos(math.pi * ratio)) * (1 - floor)

        return cosine
    raise ValueError(f"--schedule must be noam, linear or cosine, got {cfg.schedule!r}")


def param_groups(model, weight_decay, lr=1.0, llrd=1.0):
    """AdamW groups: weight decay on matrices and embeddings (>= 2-D), none on biases and norms.

    With layer-wise lr decay (llrd < 1, BERT-family encoders), parameter groups also split by
    depth below the top: the top layer, pooler and heads get lr; layer i of L gets lr * llrd^(L-1-i);
    the embeddings lr * llrd^L."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", 0)
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = layer_depth(name, n_layers) if llrd != 1.0 else 0
        decay = weight_decay if p.dim() >= 2 else 0.0
        key = (depth, p.dim() < 2)  # per depth: the decayed group first
        groups.setdefault(key, {"params": [], "weight_decay": decay, "lr": lr * llrd**depth})["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def layer_depth(name, n_layers):
    """How far below the top of an n-layer encoder a parameter sits: 0 for the top layer and for
    everything above it (pooler, heads), L-1-i for layer i, L for the embeddings (ours and HF's names)."""
    if not n_layers:
        raise ValueError("llrd: the model has no config.num_hidden_layers (a BERT-family encoder is needed)")
    if ".embeddings." in f".{name}":
        return n_layers
    m = re.search(r"(?:^|\.)(?:layers|layer)\.(\d+)\.", name)
    return n_layers - 1 - int(m.group(1)) if m else 0


def make_optimizer(name, groups, lr, betas, eps, device):
    """--optimizer: adamw (torch's, fused on CUDA), adafactor (torch's: factored second moments, no
    momentum, a step of min(lr, 1/sqrt(t)) * RMS(p)) or adamw-scale (nanoT5's, below)."""
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=lr)
    if name == "adamw-scale":
        return AdamWScale(groups, lr=lr, betas=betas, eps=eps)
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **fused)


class AdamWScale(torch.optim.Optimizer):
    """nanoT5's AdamW (their README: 1.953 C4 loss vs Adafactor's 1.995): Adam's bias-corrected
    step of each tensor times the tensor's RMS (at least 1e-3), as Adafactor's relative step does,
    so that T5's N(0, 1) embeddings move as fast, relatively, as its small matrices; decoupled
    weight decay of lr * weight_decay (not RMS-scaled); eps is added to sqrt(v) before the bias
    correction, as in HF's AdamW that theirs is built on. Their recipe: lr 2e-2, cosine decay."""

    def __init__(self, params, lr=2e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            (b1, b2), lr = group["betas"], group["lr"]
            for p in (p for p in group["params"] if p.grad is not None):
                state = self.state[p]
                if not state:
                    state.update(step=torch.zeros(()), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t, m, v = state["step"].item(), state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                rms = p.norm().div(p.numel() ** 0.5).clamp(min=1e-3)  # before the step, as nanoT5
                size = rms * (lr * math.sqrt(1 - b2**t) / (1 - b1**t))
                p.sub_(m / (v.sqrt() + group["eps"]) * size)
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
        return loss
