"""Hugging Face checkpoints, read and written by every family: `HFCheckpoint` (from_pretrained /
save_pretrained through a family's explicit key map), the safe weight readers (safetensors, or
torch.load with weights_only), and atomic file writes (a temporary file, then a rename).

Imports only torch (and safetensors / huggingface_hub on demand)."""

import json
import os
import pickle
import tempfile
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

import torch


def resolve_checkpoint(name_or_dir):
    """A local checkpoint folder as is, or a hub name downloaded (config and weights only)."""
    if os.path.isdir(name_or_dir):
        return name_or_dir
    if os.path.exists(name_or_dir):
        raise ValueError(f"name_or_dir: {name_or_dir!r} is a file; pass the folder holding config.json")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
        return snapshot_download(name_or_dir, allow_patterns=patterns)
    except Exception as e:
        raise ValueError(f"name_or_dir: {name_or_dir!r} is not a local folder, nor on the HF hub ({e})") from e


def hf_weights_file(folder):
    """The weights of an HF checkpoint folder: model.safetensors, its sharded index, or pytorch_model.bin."""
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if os.path.exists(path := os.path.join(folder, name)):
            return path
    raise FileNotFoundError(f"{folder} holds neither model.safetensors (nor its index) nor pytorch_model.bin")


def read_hf_weights(folder):
    """The HF state dict in hf_weights_file(folder), never unpickling code; every error names the file."""
    from safetensors.torch import load_file

    def read(file):  # SafetensorError for a truncated or corrupt file
        try:
            return load_file(file)
        except Exception as e:
            raise ValueError(f"{file}: not a readable safetensors file ({e})") from e

    path = hf_weights_file(folder)
    if path.endswith(".safetensors"):
        return read(path)
    if path.endswith(".json"):  # sharded: {"weight_map": {tensor name: shard file}}
        shards = sorted(set(read_json(path).get("weight_map", {}).values()))
        if lost := [s for s in shards if not os.path.isfile(os.path.join(folder, s))]:
            raise FileNotFoundError(f"{path} names shards missing from {folder}: {lost}")
        return {k: v for s in shards for k, v in read(os.path.join(folder, s)).items()}
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # from None: not torch's advice to unpickle it anyway
        raise ValueError(
            f"{path}: refused as unsafe (pickled objects beyond tensors); convert it to safetensors"
        ) from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from e


def identity(name_or_dir):
    """What a checkpoint is, for caches: a local folder's weights file (path, size, mtime), or a hub name."""
    if not Path(name_or_dir).is_dir():
        return str(name_or_dir)
    weights = Path(hf_weights_file(name_or_dir)).resolve()
    return f"{weights} {weights.stat().st_size} {weights.stat().st_mtime_ns}"


def read_json(path):
    """The object in a JSON file (config.json, an index); errors name the file."""
    with open(path) as f:  # a missing file: FileNotFoundError names it
        try:
            return json.load(f)
        except ValueError as e:  # bad JSON or bad UTF-8
            raise ValueError(f"{path}: not valid JSON ({e})") from e


def atomic_write(path, write):
    """write(a temporary file beside `path`), then rename it to `path`: a crash never leaves half a
    file, and the old one, if any, stays whole until the rename. The project's one file writer for
    checkpoints, tokenizers, metadata and tables (train.py, data.py, finetune_glue.py, HF exports)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


class HFKey(NamedTuple):  # a key-map value: one HF tensor, maybe stored transposed (GPT-2's Conv1D: (in, out))
    name: str
    transposed: bool = False


def config_fields(cls, hf):
    """The fields of a family's config dataclass `cls` that an HF config.json dict sets (num_labels from
    its id2label, when the class has one)."""
    names = {f.name for f in fields(cls)}
    kw = {k: v for k, v in hf.items() if k in names}
    if "id2label" in hf and "num_labels" in names:
        kw["num_labels"] = len(hf["id2label"])
    return kw


def config_json(config, **extra):
    """A family's config as an HF config.json dict: its fields, num_labels as id2label / label2id (HF's
    default label names), and `extra` (architectures, model_type, ...)."""
    hf = asdict(config)
    if "num_labels" in hf:
        n = hf.pop("num_labels")
        hf["id2label"], hf["label2id"] = {str(i): f"LABEL_{i}" for i in range(n)}, {f"LABEL_{i}": i for i in range(n)}
    return {**hf, **extra}


def _hf_source(value):  # a key-map value -> (its HF keys, transposed)
    if isinstance(value, HFKey):
        return (value.name,), value.transposed
    return ((value,) if isinstance(value, str) else value), False


class HFCheckpoint:
    """from_pretrained / save_pretrained in HF's format. A family gives `config_class` (with from_hf(dict,
    **overrides)), `hf_config()` (the config.json dict), `hf_keys()` ({our key: HF key, tuple of HF keys
    concatenated on dim 0, or HFKey}, sibling classes' tensors too: a checkpoint may hold them), and may
    set `hf_rename(sd)` (prefixes), `hf_optional` (our key prefixes that may start fresh: heads),
    `hf_ignored` (HF key endings that hold nothing: buffers) and `hf_tied` ({HF key: our key it copies})."""

    config_class, hf_optional, hf_ignored, hf_tied, hf_body = None, (), (), {}, "model"

    def hf_rename(self, sd):
        return sd

    def hf_key_map(self):
        """hf_keys() of the tensors this model has."""
        state = self.state_dict()
        return {k: v for k, v in self.hf_keys().items() if k in state}

    @classmethod
    def from_pretrained(cls, name_or_dir, ignore_mismatched_sizes=False, **overrides):
        """A local checkpoint folder or a hub name (downloaded). `overrides` change config fields. Optional
        tensors (heads) the checkpoint lacks start fresh, named in a warning; so do those of another shape
        with `ignore_mismatched_sizes` (HF's name: a classifier with another label count)."""
        folder = resolve_checkpoint(name_or_dir)
        model = cls(cls.config_class.from_hf(read_json(os.path.join(folder, "config.json")), **overrides))
        model.load_hf_state_dict(read_hf_weights(folder), ignore_mismatched_sizes, hf_weights_file(folder))
        return model

    def load_hf_state_dict(self, sd, ignore_mismatched_sizes=False, source="checkpoint"):
        """Copy an HF state dict in; unknown keys, missing tensors, other shapes: errors naming `source`."""
        sd, state, mapping = self.hf_rename(sd), self.state_dict(), self.hf_key_map()
        known = {*self.hf_tied, *(n for v in self.hf_keys().values() for n in _hf_source(v)[0])}
        if unknown := [k for k in sd if k not in known and not k.endswith(self.hf_ignored)]:
            model = self.config.model_type
            raise ValueError(f"{source} has {len(unknown)} keys a {model} model does not know: {unknown[:4]}")
        new, fresh, missing = {}, [], []
        for ours, hf in mapping.items():
            (names, transposed), optional = _hf_source(hf), ours.startswith(self.hf_optional)
            if not all(n in sd for n in names):
                fresh.append(ours) if optional else missing.extend(n for n in names if n not in sd)
                continue
            tensor = torch.cat([sd[n] for n in names]) if len(names) > 1 else sd[names[0]]
            tensor = tensor.t() if transposed else tensor
            if tensor.shape == state[ours].shape:
                new[ours] = tensor
            elif optional and ignore_mismatched_sizes:
                fresh.append(f"{ours} (of shape {tuple(tensor.shape)} there)")
            else:
                hint = " (a head: ignore_mismatched_sizes=True starts it fresh)" if optional else ""
                shapes = f"the shape {tuple(tensor.shape)}, the model expects {tuple(state[ours].shape)}{hint}"
                raise ValueError(f"{source}: tensor {names[0]} gives {ours} {shapes}")
        if missing:
            raise ValueError(f"{source} lacks {len(missing)} {self.hf_body} tensors, e.g. {missing[:3]}")
        for hf, ours in self.hf_tied.items():
            if hf in sd and ours in new and not torch.equal(sd[hf], new[ours]):
                tied = _hf_source(mapping[ours])[0][0]
                warnings.warn(f"{source}: {hf} differs from {tied}, tied to it; using {tied}", stacklevel=2)
        if fresh:
            warnings.warn(f"{source}: newly initialized, not in the checkpoint: {fresh}", stacklevel=3)
        self.load_state_dict(new, strict=False)

    def hf_state_dict(self):
        """This model's tensors under HF's keys (what save_pretrained writes)."""
        state, out = self.state_dict(), {}
        for ours, hf in self.hf_key_map().items():
            names, transposed = _hf_source(hf)
            parts = (state[ours].t() if transposed else state[ours]).chunk(len(names))
            out.update({n: t.detach().cpu().contiguous() for n, t in zip(names, parts, strict=True)})
        return out

    def save_pretrained(self, folder):
        """config.json and model.safetensors in HF's format, each written atomically."""
        from safetensors.torch import save_file

        config, tensors = json.dumps(self.hf_config(), indent=2), self.hf_state_dict()
        os.makedirs(folder, exist_ok=True)
        atomic_write(Path(folder) / "config.json", lambda p: write_text(p, config))
        atomic_write(
            Path(folder) / "model.safetensors", lambda p: save_file(tensors, str(p), metadata={"format": "pt"})
        )
