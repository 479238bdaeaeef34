"""hf_checkpoint.py: the safe weight readers and their errors, HFCheckpoint through a toy family."""

import warnings
from typing import NamedTuple

import pytest
import torch

import hf_checkpoint as H


def test_hf_weights_files_and_their_errors(tmp_path):
    """read_hf_weights: sharded safetensors through the index, a legacy .bin; every error names its file,
    and a .bin with pickled objects is refused without advice to unpickle it anyway."""
    import argparse
    import json

    from safetensors.torch import save_file

    a, b = torch.randn(3, 2), torch.randn(4)
    save_file({"a": a}, tmp_path / "model-1.safetensors")
    save_file({"b": b}, tmp_path / "model-2.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}))
    assert H.hf_weights_file(tmp_path) == str(index)
    sd = H.read_hf_weights(tmp_path)
    assert sorted(sd) == ["a", "b"] and torch.equal(sd["a"], a) and torch.equal(sd["b"], b)
    (tmp_path / "model-2.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.json names shards missing .*model-2\.safetensors"):
        H.read_hf_weights(tmp_path)
    index.write_text('{"weight_map": ')
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: not valid JSON"):
        H.read_hf_weights(tmp_path)
    index.unlink()

    with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
        H.read_hf_weights(tmp_path)
    torch.save({"a": a}, tmp_path / "pytorch_model.bin")
    assert torch.equal(H.read_hf_weights(tmp_path)["a"], a)
    torch.save({"a": a, "args": argparse.Namespace(lr=0.1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: refused as unsafe.*safetensors") as e:
        H.read_hf_weights(tmp_path)
    assert "weights_only" not in str(e.value) and e.value.__cause__ is None and e.value.__suppress_context__
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: not a readable PyTorch checkpoint"):
        H.read_hf_weights(tmp_path)

    save_file({"a": a, "b": b}, tmp_path / "model.safetensors")  # preferred over the .bin
    assert sorted(H.read_hf_weights(tmp_path)) == ["a", "b"]
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - 8])  # truncated
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        H.read_hf_weights(tmp_path)
    (tmp_path / "config.json").write_text("{'model_type': 'bert'}")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        H.read_json(tmp_path / "config.json")


class ToyConfig(NamedTuple):
    model_type: str = "toy"
    width: int = 4
    labels: int = 2

    @classmethod
    def from_hf(cls, hf, **overrides):
        return cls(**{**{k: hf[k] for k in cls._fields}, **overrides})

    def to_hf(self):
        return self._asdict()


class Toy(H.HFCheckpoint, torch.nn.Module):
    """A model family on HFCheckpoint: a fused (q, k) projection, a Conv1D-style (transposed) weight,
    an optional head, a buffer to ignore and a head tied to the embeddings."""

    config_class, hf_optional, hf_ignored = ToyConfig, ("head.",), (".inv_freq",)
    hf_tied = {"lm_head.weight": "emb.weight"}

    def __init__(self, config):
        super().__init__()
        self.config, n = config, config.width
        self.emb, self.qk = torch.nn.Embedding(10, n), torch.nn.Linear(n, 2 * n)
        self.proj, self.head = torch.nn.Linear(n, 3, bias=False), torch.nn.Linear(n, config.labels)

    def hf_keys(self):
        return {
            "emb.weight": "embed.weight",
            "qk.weight": ("q.weight", "k.weight"),
            "qk.bias": ("q.bias", "k.bias"),
            "proj.weight": H.HFKey("proj.weight", transposed=True),
            "head.weight": "head.weight",
            "head.bias": "head.bias",
        }

    def hf_config(self):
        return self.config.to_hf()


def test_hf_checkpoint_mixin(tmp_path):
    """HFCheckpoint through a toy family: what save_pretrained writes, the round trip, and the checks."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    toy = Toy(ToyConfig())
    toy.save_pretrained(tmp_path / "ok")
    file = tmp_path / "ok" / "model.safetensors"
    sd = load_file(file)
    names = ["embed.weight", "q.weight", "k.weight", "q.bias", "k.bias", "proj.weight", "head.weight", "head.bias"]
    assert sorted(sd) == sorted(names)
    assert torch.equal(sd["k.weight"], toy.qk.weight[4:]) and torch.equal(sd["proj.weight"], toy.proj.weight.t())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Toy.from_pretrained(tmp_path / "ok")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in toy.state_dict().items())

    def load(state, **kw):
        save_file(state, file)
        return Toy.from_pretrained(tmp_path / "ok", **kw)

    with pytest.warns(UserWarning, match=r"model\.safetensors: newly initialized, not in the checkpoint.*head.bias"):
        load({k: v for k, v in sd.items() if not k.startswith("head.")})
    load({**sd, "rotary.inv_freq": torch.ones(2)})  # ignored
    with pytest.warns(UserWarning, match=r"lm_head\.weight differs from embed\.weight"):
        load({**sd, "lm_head.weight": torch.zeros(10, 4)})
    with pytest.raises(ValueError, match=r"model\.safetensors lacks 1 model tensors, e\.g\. \['k\.bias'\]"):
        load({k: v for k, v in sd.items() if k != "k.bias"})
    with pytest.raises(ValueError, match=r"model\.safetensors has 1 keys a toy model does not know: \['v\.weight'\]"):
        load({**sd, "v.weight": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match=r"proj\.weight gives proj\.weight the shape \(3, 5\), the model expects"):
        load({**sd, "proj.weight": torch.zeros(5, 3)})
    with pytest.raises(ValueError, match="head.weight .*ignore_mismatched_sizes=True"):
        load(sd, labels=3)
    with pytest.warns(UserWarning, match=r"head\.weight \(of shape \(2, 4\) there\)"):
        three = load(sd, ignore_mismatched_sizes=True, labels=3)
    assert three.head.out_features == 3 and torch.equal(three.qk.weight, toy.qk.weight)
