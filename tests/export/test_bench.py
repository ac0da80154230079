import pytest
import torch

from alignlearn.export.bench import forward_flops, markdown, run_bench, tflops


def test_bench_times_every_available_backend(noiser_runs):
    rows, info = run_bench(noiser_runs["uncond"], batches=(1, 4), device="cpu", compile_=False, warmup=1, repeats=2, log=lambda s: None)
    backends = {r.backend for r in rows}
    assert any(b.startswith("torch eager") for b in backends) and any(b.startswith("onnxruntime") for b in backends)
    assert {r.batch for r in rows} == {1, 4}
    assert all(r.latency_ms > 0 and r.img_per_s > 0 for r in rows)
    assert info["nfe_ratio"].startswith("30:1") and "| torch eager" in markdown(rows, info)


def test_bench_counts_flops_and_can_leave_out_onnx(noiser_runs):
    rows, info = run_bench(noiser_runs["uncond"], batches=(2,), device="cpu", compile_=False, onnx=False, warmup=1, repeats=2,
                           log=lambda s: None)
    assert [r.backend for r in rows] == ["torch eager (fp32)"]
    assert info["flops_per_image"] > 0
    achieved, frac = tflops(rows[0], info, peak_tflops=rows[0].img_per_s * info["flops_per_image"] / 1e12 * 4)
    assert float(achieved) == pytest.approx(rows[0].img_per_s * info["flops_per_image"] / 1e12, rel=0.01)
    assert frac == "25.0%"
    assert "GFLOP per image" in markdown(rows, info, peak_tflops=100.0)


def test_forward_flops_are_per_image(noiser_runs):
    from torch.utils.flop_counter import FlopCounterMode

    from alignlearn.models import load_model

    model, cfg = load_model(noiser_runs["uncond"], device="cpu")
    x = torch.zeros(5, *cfg.data.shape)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, torch.full((5,), model.eps), None)
    assert forward_flops(model, tuple(cfg.data.shape), False) * 5 == fc.get_total_flops()


def test_bench_cli_records_the_typed_command_and_rejects_unknown_compile_modes(noiser_runs, tmp_path):
    import subprocess
    import sys

    res = tmp_path / "results"
    cmd = [sys.executable, "-m", "alignlearn", "bench", "--noiser", str(noiser_runs["uncond"]), "--batches", "2", "--device", "cpu",
           "--no-compile", "--no-onnx", "--repeats", "2", "--results", str(res)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"--batches 2 --device cpu --no-compile --no-onnx --repeats 2 --results {res}`" in (res / "encoder_backends.jsonl").read_text()
    bad = subprocess.run(cmd[:-2] + ["--compile-mode", "fastest"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "unknown --compile-mode 'fastest'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
