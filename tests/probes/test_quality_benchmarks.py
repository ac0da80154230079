"""benchmarks/recon.py and benchmarks/fidelity.py write the records RESULTS.md is generated from."""

import pytest

from alignlearn.results import read_records

from ..core.helpers import load_benchmark


@pytest.mark.slow
def test_recon_benchmark_aggregates_seeds_into_one_record_per_pairing(tmp_path):
    bench = load_benchmark("recon")
    bench.main(["--data", "digits", "--budget-s", "2", "--seeds", "0,1", "--num-images", "16", "--refine", "2",
                "--out", str(tmp_path / "out"), "--results", str(tmp_path / "results")])
    rows = read_records(tmp_path / "results", "reconstruction")
    assert [r["pairing"] for r in rows][:4] == ["CT_Inv+CM", "CT_Inv+DM", "DDIM_Inv+DM", "DDIM_Inv+CM"]
    assert all(" ± " in r["PSNR"] and " ± " in r["SSIM"] for r in rows) and rows[0]["setting"] == "unconditional"
    assert "seeds 0,1" in rows[0]["training per model"] and "--seeds 0,1" in rows[0]["command"]
    assert len(read_records(tmp_path / "results", "speed_ratio")) == 1


def test_fidelity_benchmark_records_every_row(runs, tmp_path):
    bench = load_benchmark("fidelity")
    bench.main(["--noiser", str(runs["noiser"]), "--dm", str(runs["dm"]), "--num-images", "8", "--ref-steps", "200",
                "--device", "cpu", "--results", str(tmp_path / "results")])
    rows = read_records(tmp_path / "results", "fidelity")
    assert [r["encoder"] for r in rows][0] == "CT_Inv" and len(rows) == 5
    assert rows[0]["reference"].startswith("DM, 200 Heun steps") and float(rows[0]["rel. L2 median"]) > 0
