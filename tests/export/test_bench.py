from alignlearn.export.bench import markdown, run_bench


def test_bench_times_every_available_backend(noiser_runs):
    rows, info = run_bench(noiser_runs["uncond"], batches=(1, 4), device="cpu", compile_=False, warmup=1, repeats=2, log=lambda s: None)
    backends = {r.backend for r in rows}
    assert any(b.startswith("torch eager") for b in backends) and any(b.startswith("onnxruntime") for b in backends)
    assert {r.batch for r in rows} == {1, 4}
    assert all(r.latency_ms > 0 and r.img_per_s > 0 for r in rows)
    assert info["nfe_ratio"].startswith("30:1") and "| torch eager" in markdown(rows, info)
