"""bench.py: every row runs, our outputs match the reference, the measurements are sane."""

import json

import pytest
import torch

import bench


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_bench_rows_and_json(tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "--d-model",
        "32",
        "--nhead",
        "4",
        "--layers",
        "1",
        "--batch",
        "3",
        "--seq",
        "8",
        "--bert-preset",
        "bert-tiny",
        "--bert-batch",
        "3",
        "--bert-seq",
        "8",
        "--albert-preset",
        "albert-tiny-test",
        "--albert-layers",
        "2",
        "--gpt-d",
        "64",
        "--gpt-layers",
        "1",
        "--gpt-batch",
        "2",
        "--gpt-seq",
        "8",
        "--gen-tokens",
        "4",
        "--t5-preset",
        "t5-tiny-test",
        "--t5-layers",
        "1",
        "--bart-preset",
        "bart-tiny-test",
        "--bart-layers",
        "1",
        "--repeats",
        "1",
        "--json",
    ] + [str(out)]
    quick = bench.main(args[:-2])  # the default table: one row per family
    assert [r["case"].split()[0] for r in quick] == [
        "Transformer",
        "BertForPreTraining",
        "AlbertForPreTraining",
        "GPT-2",
        "T5",
        "BART",
    ]
    rows = bench.main([*args, "--all"])
    assert len(rows) == 27 and any(r["case"].startswith("BertForPreTraining") for r in rows)
    for r in rows:  # rows timing two different models (a student and its teacher, UniLM and transformer.py): no diff
        other = r["case"].startswith("TinyBERT4") or "vs transformer.py" in r["case"]
        assert r["max_abs_diff"] is None if other else r["max_abs_diff"] < 1e-4, r
        assert r["ours_ms"] > 0 and r["ref_ms"] > 0 and r["time_ratio"] > 0
        assert r["mem_ours_mib"] > 0 and r["mem_ref_mib"] > 0
        floored = "generation" in r["case"] and not ("XLNet" in r["case"] or "vs transformer.py" in r["case"])
        assert (r["floor_ms"] > 0 and r["ours_floor"] > 0 and r["ref_floor"] > 0) if floored else r["floor_ms"] is None
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["matmul_peak_flops"]["float32"] > 0 and saved["memory_bandwidth"] > 1e8


def test_decoding_bytes_counts_weights_cache_and_memory_per_step():
    """The floor's bytes: per step the weights, the encoder's keys/values, and the cache so far."""
    assert bench.decoding_bytes(100, 3, 2, 10, memory=7) == 3 * (100 + 7) + (2 + 3 + 4) * 10
    shared = torch.nn.Linear(4, 4, bias=False)
    assert bench.nbytes(shared, torch.nn.Sequential(shared)) == 4 * 4 * 4  # a shared weight counted once


def test_peak_memory_sees_a_known_allocation():
    n = 1 << 20  # 4 MiB of fp32, freed at once
    peak = bench.peak_memory(lambda: torch.ones(n).sum(), torch.device("cpu"))
    assert 4 * n <= peak < 8 * n


def test_padding_mask():
    pad = bench.padding_mask(16, 64, 8, "cpu")
    lengths = (~pad).sum(1)
    assert lengths.min() >= 8 and lengths.max() <= 64
    assert torch.equal(pad, pad.cummax(1).values)  # right-padded
