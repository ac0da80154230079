import pytest

from alignlearn.results import read_records

from ..core.helpers import load_benchmark


def test_noiser_recipes_rows_with_the_dm_comparison(runs, tmp_path):
    bench = load_benchmark("noiser_recipes")
    results = tmp_path / "results"
    bench.main(["--cm", str(runs["cm"]), "--dm", str(runs["dm"]), "--steps", "4", "--batch-size", "16",
                "--variants", "default,s1=10", "--num-images", "16", "--seed", "3", "--results", str(results)])
    rows = read_records(results, "noiser_recipes")
    assert [r["variant"] for r in rows] == ["default", "s1=10"] and all(r["training"].endswith("seed 3") for r in rows)
    for r in rows:
        relative_l2, cosine = float(r["relative L2 to DDIM_Inv"]), float(r["cosine to DDIM_Inv"])
        assert relative_l2 > 0 and -1 <= cosine <= 1


def test_variants_parse_into_objective_settings():
    bench = load_benchmark("noiser_recipes")
    assert bench.parse_variant("default") == {}
    assert bench.parse_variant("s1=20;target=stopgrad;lr=0.001") == {"s1": 20, "target": "stopgrad", "lr": 0.001}


@pytest.mark.slow
def test_noiser_recipes_rows_with_the_edit_and_linear_probes(runs, tmp_path):
    bench = load_benchmark("noiser_recipes")
    results, keep = tmp_path / "results", tmp_path / "kept"
    args = ["--cm", str(runs["cm"]), "--dm", str(runs["dm"]), "--steps", "4", "--batch-size", "16", "--num-images", "16",
            "--probes", "edit,edit-dm,linear", "--judge-epochs", "1", "--per-class", "1", "--keep", str(keep),
            "--results", str(results)]
    bench.main(args)
    (row,) = read_records(results, "noiser_recipes_uses")
    for d in ("CM", "DM"):
        conversion, ssim = float(row[f"edit conversion ({d})"]), float(row[f"edit SSIM to source ({d})"])
        prior_ssim = float(row[f"prior-latent SSIM ({d})"])
        assert 0 <= conversion <= 1 and -1 <= ssim <= 1 and -1 <= prior_ssim <= 1
    for cell in (row["linear probe: latent"], row["linear probe: features"]):
        mean, std = (float(x) for x in cell.split(" ± "))
        assert 0 <= mean <= 1 and std >= 0
    assert (keep / "default-seed0" / "config.json").is_file()  # kept for later probes
    with pytest.raises(SystemExit):  # and never trained over
        bench.main(args)
    assert len(read_records(results, "noiser_recipes_uses")) == 1


def test_noiser_recipes_refuses_unknown_probes(runs, tmp_path):
    bench = load_benchmark("noiser_recipes")
    with pytest.raises(SystemExit):
        bench.main(["--cm", str(runs["cm"]), "--probes", "recon", "--results", str(tmp_path / "results")])
    with pytest.raises(SystemExit):  # the DM decoder needs --dm
        bench.main(["--cm", str(runs["cm"]), "--probes", "edit-dm", "--results", str(tmp_path / "results")])
