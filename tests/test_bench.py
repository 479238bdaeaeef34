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
    engine = {
        r["case"].split(" (")[0].split()[0] + (" beam" if "beam" in r["case"] else ""): r
        for r in rows
        if "ct2_int8_ms" in r
    }
    assert sorted(engine) == ["BART", "BART beam", "GPT-2", "T5", "T5 beam"]  # CTranslate2 on the same weights
    assert all(r["ct2_float32_ms"] > 0 and r["ct2_int8_ms"] > 0 for r in engine.values())
    assert engine["GPT-2"]["ct2_float32_same_tokens"] == engine["T5"]["ct2_float32_same_tokens"] == 1.0
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


@pytest.mark.slow  # three conversions by another engine (seconds): `pytest -m 'not slow'` skips it
@pytest.mark.parametrize("family", ["gpt2", "t5", "bart"])
def test_ctranslate2_columns_generate_hfs_tokens_from_the_same_weights(family):
    """bench.ct2_generation: HF's model converted to CTranslate2 (ids through a "t<i>" vocabulary) gives HF's
    greedy tokens (BART: but the end token HF forces at the limit); int8 runs."""
    import transformers

    torch.manual_seed(0)
    if family == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=300))
    elif family == "t5":
        hf = transformers.T5ForConditionalGeneration(
            transformers.T5Config(
                d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4, vocab_size=300, decoder_start_token_id=0
            )
        )
    else:
        kw = dict(encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2)
        config = transformers.BartConfig(d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=300, **kw)
        hf = transformers.BartForConditionalGeneration(config)
        hf.generation_config.forced_bos_token_id = 0  # bart-base's, as the bench row sets it
    hf.eval()
    g = torch.Generator().manual_seed(1)
    prompt, n = torch.randint(3, 300, (2, 10), generator=g), 6
    mask = torch.ones_like(prompt)
    mask[1, 7:] = 0  # a shorter second prompt
    expected = []
    for row, m in zip(prompt, mask, strict=True):  # one prompt at a time: no padding on HF's side
        x = row[m.bool()][None]
        out = hf.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
        expected.append(out[0, -n:].tolist())
    ours = bench.ct2_generation(hf, prompt, mask, n, 1, "float32")()
    if family == "bart":  # HF forces the end token at the limit; CTranslate2 does not
        ours, expected = [r[:-1] for r in ours], [r[:-1] for r in expected]
    assert ours == expected
    assert len(bench.ct2_generation(hf, prompt, mask, n, 4, "int8")()[0]) == n
