"""optim.py: the recipes' schedules, nanoT5's AdamWScale (the lr groups: tests/test_glue.py)."""

import pytest
import torch

import optim
import train


def test_cosine_schedule_is_nanogpts():
    cfg = train.make_config("shakespeare-char-cpu", {})
    f = optim.lr_factor(cfg)
    lr = lambda i: cfg.lr * f(i)  # noqa: E731
    assert lr(0) == pytest.approx(1e-3 / 101) and lr(99) == pytest.approx(1e-3 * 100 / 101)
    assert lr(100) == pytest.approx(1e-3) and lr(1050) == pytest.approx(5.5e-4)
    assert lr(2000) == pytest.approx(1e-4) and lr(5000) == pytest.approx(1e-4)
    # no decay_steps nor max_steps: the decay ends with max_epochs (bart-multi30k: 2 epochs)
    cfg = train.make_config("bart-multi30k", {})
    f = optim.lr_factor(cfg, per_epoch=300)
    assert f(199) == pytest.approx(200 / 201) and f(400) == pytest.approx(1e-5 / 5e-4 + 0.5 * (1 - 1e-5 / 5e-4))
    assert f(600) == pytest.approx(1e-5 / 5e-4) and cfg.max_steps == cfg.decay_steps == 0 and cfg.max_epochs == 2


def test_adamw_scale_is_adams_step_times_the_tensors_rms():
    """nanoT5's AdamWScale: each step is torch's AdamW step (same betas, eps, gradients) times the
    RMS the tensor has before it, at least 1e-3 (a zero tensor moves by lr * 1e-3 per step); its
    decoupled weight decay is lr * weight_decay, unscaled."""
    g = torch.Generator().manual_seed(0)
    p, zero = (torch.randn(40, 30, generator=g) * 3).requires_grad_(), torch.zeros(5, requires_grad=True)
    ref = p.detach().clone().requires_grad_()
    # eps sits elsewhere in torch's AdamW: tiny, out of the way
    ours = optim.AdamWScale([p, zero], lr=0.01, betas=(0.9, 0.99), eps=1e-12)
    adam = torch.optim.AdamW([ref], lr=0.01, betas=(0.9, 0.99), eps=1e-12, weight_decay=0.0)
    for _ in range(3):  # the moments depend on the gradients only: AdamW restarts from our point each step
        grad = torch.randn(40, 30, generator=g)
        p.grad, ref.grad, zero.grad = grad.clone(), grad.clone(), torch.ones(5)
        start, rms = p.detach().clone(), p.detach().pow(2).mean().sqrt()
        ref.data.copy_(start)
        ours.step(), adam.step()
        step, want = p.detach() - start, (ref.detach() - start) * rms
        torch.testing.assert_close(step, want, rtol=1e-4, atol=2e-6)  # atol: float32 rounding of p ~ 10
    assert rms > 2 and torch.allclose(zero.detach(), torch.full((5,), -3 * 0.01 * 1e-3), rtol=1e-4)
    w = torch.ones(4, requires_grad=True)
    w.grad = torch.zeros(4)
    optim.AdamWScale([w], lr=0.1, weight_decay=0.5).step()
    assert torch.allclose(w.detach(), torch.full((4,), 0.95))
