import pytest

from alignlearn.results import read_records

from ..core.helpers import load_benchmark


@pytest.mark.slow
def test_cpu_precision_benchmark_writes_one_row_per_backend(noiser_runs, tmp_path):
    bench = load_benchmark("cpu_precision")
    results = tmp_path / "results"
    bench.main(["--noiser", str(noiser_runs["cond"]), "--batch", "4", "--repeats", "1", "--rounds", "1",
                "--calibration-images", "8", "--results", str(results)])
    rows = read_records(results, "cpu_precision")
    backends = [r["backend"] for r in rows]
    assert backends == ["torch eager fp32", "torch eager bf16 autocast", "onnxruntime CPU fp32", "onnxruntime CPU fp16",
                        "onnxruntime CPU int8 (QDQ, static)"]
    assert rows[0]["vs torch eager fp32"] == "1.00x" and all(float(r["img/s (median)"]) > 0 for r in rows)
    errors = {r["backend"]: float(r["latents: relative error from fp64 (held-out images)"]) for r in rows}
    assert errors["torch eager fp32"] < 1e-5 and errors["onnxruntime CPU fp32"] < 1e-4  # the exact rows are exact
    assert errors["onnxruntime CPU fp16"] > errors["onnxruntime CPU fp32"]  # and the reduced ones are not
