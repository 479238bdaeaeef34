"""The house rules of docs/architecture.md, read from the code: who may import whom, and each file's
line budget. A new top-level file gets its row here (the test fails until it has one)."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(p.stem for p in ROOT.glob("*.py"))

# The floor: code two or more families share, in files named for what they hold. It imports no
# other project file, so every model can stand on it.
FLOOR = {"contract", "decoding", "hf_checkpoint", "layers", "machine", "optim", "recipes"}
MODELS = {"transformer", "bert", "gpt", "t5", "bart", "albert", "xlnet", "unilm"}

MAY_IMPORT = {  # the project files each top-level file may import (the floor's own rows: none)
    **{name: set() for name in FLOOR},
    **{name: FLOOR for name in MODELS},
    "unilm": FLOOR | {"bert"},  # UniLM is BERT's network with other masks
    "subword": set(),
    "data": {"subword", "hf_checkpoint", "pretraining_data"},  # atomic_write; `data.py bert` (in main() only)
    "pretraining_data": {"data", "subword", "hf_checkpoint"},  # BERT's MLM/NSP data on data.py's raw text
    "tasks": FLOOR | MODELS | {"data", "pretraining_data", "subword"},
    "translation": FLOOR | {"transformer", "t5", "bart", "unilm", "tasks", "data", "pretraining_data", "run_folder"},
    "plots": set(),
    "run_folder": set(),
    "train": FLOOR | {"tasks", "translation", "data", "plots", "run_folder"},  # the loop knows no model
    "finetune_glue": FLOOR | {"train", "tasks", "data", "pretraining_data", "bert", "albert", "bart", "xlnet"},
    "distill": FLOOR | {"finetune_glue", "train", "bert"},  # TinyBERT's task distillation on GLUE
    "study": FLOOR | {"train", "finetune_glue", "tasks", "data", "bench", "plots"},
    "bench": FLOOR | MODELS | {"data", "tasks"},
}
BUDGETS = {"train": 800, "transformer": 1100, "data": 1000, "finetune_glue": 650, "tasks": 700, "study": 400}
DEFAULT_BUDGET = 800


def imported(name):
    """The top-level modules a file imports, anywhere in it (function-level imports included)."""
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_every_file_has_a_row():
    assert set(FILES) <= set(MAY_IMPORT), f"add a row to MAY_IMPORT for {sorted(set(FILES) - set(MAY_IMPORT))}"


@pytest.mark.parametrize("name", FILES)
def test_imports_point_one_way(name):
    ours = imported(name) & set(MAY_IMPORT)
    assert ours <= MAY_IMPORT[name], f"{name}.py imports {sorted(ours - MAY_IMPORT[name])}: not allowed"
    if name in MODELS | FLOOR - {"contract"}:  # HF's package: baselines (contract.hf_twin), tests, bench
        assert "transformers" not in imported(name), f"{name}.py imports transformers"


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_within_its_budget(name):
    lines = len((ROOT / f"{name}.py").read_text().splitlines())
    budget = BUDGETS.get(name, DEFAULT_BUDGET)
    assert lines <= budget, f"{name}.py has {lines} lines, its budget is {budget}"


def test_the_rules_catch_a_model_importing_another(tmp_path, monkeypatch):
    """The check itself: a model file that imports another model is caught."""
    (tmp_path / "gpt.py").write_text("import math\n\ndef f():\n    from bert import BertModel\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imported("gpt") == {"math", "bert"}
    with pytest.raises(AssertionError, match=r"gpt\.py imports \['bert'\]"):
        test_imports_point_one_way("gpt")
