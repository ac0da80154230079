"""benchmarks/recon.py, fidelity.py and cifar10.py write the records RESULTS.md is generated from."""

import json

import pytest

from alignlearn.results import read_records

from ..core.helpers import load_benchmark
from ..core.test_cifar10 import SHARED, needs_copy


def test_a_recipe_string_reads_as_typed_training_knobs():
    parse = load_benchmark("training").parse_variant
    assert parse("default") == {}
    assert parse("objective=cd-inversion;teacher=dm;s1=20;lr=1e-3;segments=4") == {
        "objective": "cd-inversion", "teacher": "dm", "s1": 20, "lr": 1e-3, "segments": 4}


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
    # the adopted recipe: the DM trains first and the noiser begins as one Euler step of it
    assert "noiser recipe init_from=dm" in rows[0]["training per model"]
    packed = json.loads((tmp_path / "out" / "runs" / "noiser" / "config.json").read_text())
    assert packed["model"]["backbone"]["arch"] == "euler-step"


def test_fidelity_benchmark_records_every_row(runs, tmp_path):
    bench = load_benchmark("fidelity")
    bench.main(["--noiser", str(runs["noiser"]), "--dm", str(runs["dm"]), "--num-images", "8", "--ref-steps", "200",
                "--device", "cpu", "--results", str(tmp_path / "results")])
    rows = read_records(tmp_path / "results", "fidelity")
    assert [r["encoder"] for r in rows][0] == "CT_Inv" and len(rows) == 5
    assert rows[0]["reference"].startswith("DM, 200 Heun steps") and float(rows[0]["rel. L2 median"]) > 0


@pytest.mark.slow
@needs_copy
def test_cifar10_benchmark_records_a_curve_and_the_longest_point_beside_the_report(tmp_path):
    bench = load_benchmark("cifar10")
    bench.main(["--data-dir", str(SHARED), "--budgets-s", "1,2", "--batch-size", "16", "--num-images", "16",
                "--eval-batch", "16", "--fidelity-images", "4", "--ref-steps", "200", "--linear-images", "100",
                "--device", "cpu", "--keep", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    rows = read_records(tmp_path / "results", "cifar10")
    assert [r["pairing"] for r in rows] == ["CT_Inv+CM", "CT_Inv+DM", "DDIM_Inv+DM", "DDIM_Inv+CM", "Prior+CM", "Prior+DM"]
    assert rows[0]["data (test images)"] == "CIFAR-10 (JPEG copy) (16)" and rows[0]["report: LPIPS / SSIM / PSNR / s per batch"].startswith("0.2426")
    assert rows[-1]["report: LPIPS / SSIM / PSNR / s per batch"] == "-" and "init_from=dm" in rows[0]["training per model"]
    fidelity = read_records(tmp_path / "results", "fidelity")
    assert fidelity[0]["encoder"] == "CT_Inv" and fidelity[0]["data"].startswith("CIFAR-10 (JPEG copy)")
    linear = read_records(tmp_path / "results", "linear_probe")
    assert [r["features"] for r in linear][0] == "raw pixels" and "test split (100)" in linear[0]["data"]
    init = json.loads((tmp_path / "runs" / "1s" / "noiser" / "config.json").read_text())
    assert init["train"]["init_from"].endswith("dm") and init["data"]["source"] == "CIFAR-10 (JPEG copy)"
    curve = read_records(tmp_path / "results", "cifar10_curve")  # one row per point; full rows for the longest only
    assert [r["training per model"] for r in curve] == ["1 s", "2 s"] and "2 s each" in rows[0]["training per model"]
    assert all(float(r["PSNR CT_Inv+CM"]) > 0 and float(r["fidelity CT_Inv"]) > 0 for r in curve)
    assert abs(float(curve[1]["fidelity CT_Inv"]) - float(fidelity[0]["rel. L2 median"])) <= 5e-4 + 5e-5  # 3 vs 4 digits
    assert curve[1]["PSNR DDIM_Inv+DM"] == rows[2]["PSNR"] and (tmp_path / "runs" / "1s" / "recon" / "report.md").is_file()


def test_cifar10_benchmark_without_data_is_one_error_line(tmp_path, capsys):
    bench = load_benchmark("cifar10")
    with pytest.raises(SystemExit) as e:
        bench.main(["--data-dir", str(tmp_path), "--results", str(tmp_path / "results")])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_diffusers_teacher_benchmark_distils_a_noiser_from_a_ddpm_it_trains(tmp_path):
    pytest.importorskip("diffusers")
    bench = load_benchmark("diffusers_teacher")
    bench.main(["--dm-budget-s", "2", "--budget-s", "2", "--train-batch", "16", "--num-images", "8", "--ref-steps", "200",
                "--batch", "8", "--device", "cpu", "--keep", str(tmp_path / "keep"), "--results", str(tmp_path / "results")])
    assert (tmp_path / "keep" / "ddpm" / "model_index.json").is_file()
    rows = read_records(tmp_path / "results", "fidelity")
    assert rows[0]["encoder"] == "CT_Inv" and "teacher: the diffusers model" in rows[0]["noiser"]
    assert any("diffusers DDPM UNet2DModel" in r["encoder"] for r in rows)
    (speed,) = read_records(tmp_path / "results", "diffusers_teacher")
    assert speed["speed-up"].endswith("x") and float(speed["speed-up"][:-1]) > 1
