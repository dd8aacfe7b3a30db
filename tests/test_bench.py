"""The benchmark scripts run end to end at a tiny size and write their JSON records (no timing assertions)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_module():
    sys.path.insert(0, str(BENCH))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_train_step_writes_record(bench_module, tmp_path: Path) -> None:
    train_step = bench_module("train_step")
    record = train_step.main([
        "--size", "32", "--batch", "1", "--steps", "1", "--warmup", "0", "--loader-workers", "0",
        "--loader-batches", "1", "--compare-curves", "2", "--style-size", "32", "--peak-size", "256", "--also", "32-true+channels_last+plain_layers", "--out-dir", str(tmp_path),
    ])
    saved = json.loads(Path(record["record_path"]).read_text())
    assert Path(record["record_path"]).parent == tmp_path
    for key in ("machine", "config", "ours", "steps", "ratio_ours_vs_reference", "flops", "loader", "curves"):
        assert key in saved, key
    assert {"cpu_model", "torch_version", "torch_threads"} <= set(saved["machine"])
    assert set(saved["steps"]) == {"32-true", "32-true+channels_last+plain_layers", "reference"}
    assert saved["steps"]["32-true"]["images_per_s"] > 0
    flops = saved["flops"]
    assert flops["ours_per_step"] > 0 and flops["reference_per_step"] > flops["ours_per_step"]
    assert {"fp32", "bf16"} <= set(flops["matmul_peak_gflops_per_s"])
    assert saved["loader"][0]["num_workers"] == 0 and saved["loader"][0]["images_per_s"] > 0
    # Same init, same data, same precision, plain layers vs sub-pixel layers: the series agree.
    assert saved["curves"]["max_relative_difference"] < 1e-4
    assert len(saved["curves"]["series"]["reference"]) == 2


def test_inference_writes_record(bench_module, tmp_path: Path) -> None:
    inference = bench_module("inference")
    record = inference.main([
        "--sizes", "32,40x24", "--repeats", "1", "--warmup", "0", "--runtimes", "eager-fp32,eager-fp32-cl,torchscript",
        "--out-dir", str(tmp_path),
    ])
    saved = json.loads(Path(record["record_path"]).read_text())
    assert {"machine", "config", "runtimes", "results"} <= set(saved)
    rows = {(r["size"], r["runtime"]): r for r in saved["results"]}
    assert set(rows) == {(s, r) for s in ("32", "40x24") for r in ("eager-fp32-plain", "eager-fp32", "eager-fp32-cl", "torchscript")}
    for row in rows.values():
        assert row["median_s"] > 0 and row["max_abs_diff_vs_reference"] < 1e-3
    assert rows[("40x24", "eager-fp32-plain")]["width"] == 40 and rows[("40x24", "eager-fp32-plain")]["height"] == 24


def test_size_parsing(bench_module) -> None:
    inference = bench_module("inference")
    assert inference.parse_size("1920x1080") == (1080, 1920)
    assert inference.parse_size("512") == (512, 512)
    train_step = bench_module("train_step")
    assert train_step.parse_variant("bf16-mixed+channels_last") == ("bf16-mixed", frozenset({"channels_last"}))
    with pytest.raises(SystemExit):
        train_step.parse_variant("32-true+turbo")
