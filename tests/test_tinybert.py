"""TinyBERT's distillation (bert.py): the layer mapping, each loss against a direct computation
(TinyBERT's own formulas: MSELoss on hidden states through fit_dense and on pre-softmax attention
scores, soft cross-entropy with a temperature), the attention scores against HF's, and bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F
import transformers

import bert as B

TEACHER = dict(vocab_size=97, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)
STUDENT = dict(TEACHER, hidden_size=24, num_hidden_layers=2, intermediate_size=48)


def models(cls=B.BertModel, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(B.BertConfig(**STUDENT, **kw)), cls(B.BertConfig(**TEACHER, **kw))


def batch(padded=True, B_=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (B_, T), generator=g)
    mask = torch.ones(B_, T, dtype=torch.long)
    if padded:
        for b, n in enumerate((T, T - 3, 4)[:B_]):
            mask[b, n:] = 0
            ids[b, n:] = 0
    types = torch.zeros(B_, T, dtype=torch.long)
    types[:, T // 2 :] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types * mask)


def test_layer_map():
    assert B.layer_map(4, 12) == [0, 3, 6, 9, 12]  # TinyBERT4 from BERT-base: g(m) = 3m
    assert B.layer_map(4, 6) == [0, 1, 3, 4, 6]  # from all-MiniLM-L6-v2: the last onto the last
    assert B.layer_map(3, 3) == [0, 1, 2, 3]
    for bad in ((5, 4), (0, 4)):
        with pytest.raises(ValueError, match="num_hidden_layers"):
            B.layer_map(*bad)


@pytest.mark.parametrize("skip_padding", [True, False])
def test_attention_scores_match_hf_and_a_direct_computation(tmp_path, skip_padding):
    torch.manual_seed(0)
    ours = B.BertModel(B.BertConfig(**TEACHER)).eval()
    ours.skip_padding = skip_padding
    ours.save_pretrained(tmp_path)
    hf = transformers.BertModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    x = batch()
    with torch.no_grad():
        out = ours(**x, output_hidden_states=True, output_attention_scores=True)
        plain = ours(**x, output_hidden_states=True)  # the SDPA path
        ref = hf(**x, output_attentions=True, output_hidden_states=True)
    real = x["attention_mask"].bool()
    assert len(out.attention_scores) == TEACHER["num_hidden_layers"]
    for a, b in zip(out.hidden_states, plain.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for s, p in zip(out.attention_scores, ref.attentions, strict=True):  # HF returns the probabilities
        probs = s.masked_fill(~real[:, None, None, :], float("-inf")).softmax(-1)
        torch.testing.assert_close(
            probs.transpose(1, 2)[real], p.transpose(1, 2)[real], atol=1e-5, rtol=0
        )  # real queries
    # layer 0's scores by hand, from its input (the embeddings)
    layer, h0, H = ours.layers[0], out.hidden_states[0], TEACHER["num_attention_heads"]
    q, k, _ = F.linear(h0, layer.qkv.weight, layer.qkv.bias).chunk(3, -1)
    q, k = (t.view(3, 9, H, -1).transpose(1, 2) for t in (q, k))
    direct = q @ k.transpose(-1, -2) / (32 // H) ** 0.5
    pairs = real[:, None, :, None] & real[:, None, None, :]
    torch.testing.assert_close(out.attention_scores[0] * pairs, direct * pairs, atol=1e-5, rtol=0)


def direct_intermediate(d, student, teacher, x):
    """TinyBERT's task_distill.py, written out per sample over its real tokens (on an unpadded
    batch it is that code's loss exactly: MSELoss of fit_dense(student rep) vs teacher rep, of
    student vs teacher attention scores, summed over the mapped layers)."""
    with torch.no_grad():
        so = student(**x, output_hidden_states=True, output_attention_scores=True)
        to = teacher(**x, output_hidden_states=True, output_attention_scores=True)
    g = B.layer_map(len(student.layers), len(teacher.layers))
    rep = att = 0.0
    for b, n in enumerate(x["attention_mask"].sum(1).tolist()):
        w = n / x["attention_mask"].sum().item()  # the sample's share of the tokens
        for m in range(len(g)):
            with torch.no_grad():
                rep += w * F.mse_loss(d.fit_dense(so.hidden_states[m][b, :n]), to.hidden_states[g[m]][b, :n]).item()
        wp = n * n / x["attention_mask"].sum(1).pow(2).sum().item()  # its share of the (query, key) pairs
        for m in range(1, len(g)):
            s, t = so.attention_scores[m - 1][b, :, :n, :n], to.attention_scores[g[m] - 1][b, :, :n, :n]
            att += wp * F.mse_loss(s, t).item()
    return rep, att


@pytest.mark.parametrize("padded", [False, True])
def test_intermediate_losses_match_a_direct_computation(padded):
    student, teacher = models()
    d = B.TinyBertDistiller(student, teacher).eval()
    x = batch(padded)
    out = d(**x)
    parts = {k: (s / out.sums.counts[c]).item() for k, (s, c) in out.sums.losses.items()}
    rep, att = direct_intermediate(d, student, teacher, x)
    assert parts["hidden"] == pytest.approx(rep, rel=1e-5)
    assert parts["attention"] == pytest.approx(att, rel=1e-5)
    assert out.loss.item() == pytest.approx(rep + att, rel=1e-5)
    assert out.sums.counts["pairs"] == (x["attention_mask"].sum(1) ** 2).sum()
    # gradients reach the student and fit_dense, never the teacher
    out.loss.backward()
    learned = [p for n, p in [*student.named_parameters(), *d.fit_dense.named_parameters()] if "pooler" not in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned)  # the pooler is not distilled
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_sums_of_halves_equal_the_whole_batch():
    """Accumulation: two micro-batches' sums over the step's counts give the whole batch's loss."""
    student, teacher = models()
    d = B.TinyBertDistiller(student, teacher).eval()
    x = batch(B_=3)
    whole = d(**x).loss
    halves = [d(**{k: v[s] for k, v in x.items()}).sums for s in (slice(0, 1), slice(1, 3))]
    totals = {c: sum(h.counts[c] for h in halves) for c in ("tokens", "pairs")}
    torch.testing.assert_close(sum(h.loss(totals) for h in halves), whole, atol=1e-6, rtol=1e-5)


def test_student_equal_to_teacher_gives_zero_intermediate_losses():
    _, teacher = models()
    d = B.TinyBertDistiller(copy.deepcopy(teacher), teacher).eval()  # same width: fit_dense is the identity
    assert isinstance(d.fit_dense, torch.nn.Identity) and d.layers == [0, 1, 2, 3, 4]
    out = d(**batch())
    assert out.loss.item() == 0.0 and set(out.sums.losses) == {"hidden", "attention"}


def test_teacher_stays_in_eval_mode():
    student, teacher = models(hidden_dropout_prob=0.5)
    d = B.TinyBertDistiller(student, teacher).train()
    assert student.training and not teacher.training
    with torch.no_grad():  # the targets do not change from call to call (no dropout)
        x = batch()
        a = teacher(**x, output_hidden_states=True).hidden_states[-1]
        d(**x)
        torch.testing.assert_close(a, teacher(**x, output_hidden_states=True).hidden_states[-1], atol=0, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_prediction_loss_matches_tinyberts_soft_cross_entropy(temperature):
    student, teacher = models(B.BertForSequenceClassification, num_labels=3)
    d = B.TinyBertDistiller(student, teacher, "prediction", temperature).eval()
    x = batch(padded=True)
    labels = torch.tensor([0, 2, 1])
    out = d(**x, labels=labels)
    with torch.no_grad():
        s, t = student(**x).logits / temperature, teacher(**x).logits / temperature
    direct = (-t.softmax(-1) * s.log_softmax(-1)).mean()  # TinyBERT's soft_cross_entropy
    assert out.loss.item() == pytest.approx(direct.item(), rel=1e-6)
    torch.testing.assert_close(out.logits, student(**x).logits)
    assert out.sums.metrics["acc"][0] == (student(**x).logits.argmax(-1) == labels).sum()


def test_prediction_regression_uses_the_labels():
    student, teacher = models(B.BertForSequenceClassification, num_labels=1)
    d = B.TinyBertDistiller(student, teacher, "prediction").eval()
    x, y = batch(), torch.tensor([0.5, 1.0, 4.0])
    with torch.no_grad():
        direct = F.mse_loss(student(**x).logits.view(-1), y)
    assert d(**x, labels=y).loss.item() == pytest.approx(direct.item(), rel=1e-6)


def test_bad_input():
    student, teacher = models()
    with pytest.raises(ValueError, match="num_attention_heads"):
        torch.manual_seed(0)
        B.TinyBertDistiller(B.BertModel(B.BertConfig(**dict(STUDENT, num_attention_heads=3))), teacher)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        B.TinyBertDistiller(teacher, student)  # the deeper one as the student
    with pytest.raises(ValueError, match="temperature"):
        B.TinyBertDistiller(student, teacher, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        B.soft_cross_entropy_sum(torch.zeros(2, 2), torch.zeros(2, 2), temperature=-1)
    with pytest.raises(ValueError, match="stage"):
        B.TinyBertDistiller(student, teacher, stage="logits")
    classifier, _ = models(B.BertForSequenceClassification)
    with pytest.raises(ValueError, match="teacher with a classifier"):
        B.TinyBertDistiller(classifier, teacher, "prediction")  # a teacher never fine-tuned on the task
    s3, t2 = models(B.BertForSequenceClassification, num_labels=3)[0], models(B.BertForSequenceClassification)[1]
    with pytest.raises(ValueError, match="num_labels"):
        B.TinyBertDistiller(s3, t2, "prediction")
    with pytest.raises(ValueError, match="same num_attention_heads"):
        B.attention_mse_sum(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3, 3))
