import pytest

from ..core.helpers import load_benchmark


def test_noiser_recipes_rows_with_the_dm_comparison(runs, tmp_path):
    bench = load_benchmark("noiser_recipes")
    results = tmp_path / "RESULTS.md"
    bench.main(["--cm", str(runs["cm"]), "--dm", str(runs["dm"]), "--steps", "4", "--batch-size", "16",
                "--variants", "default,s1=10", "--num-images", "16", "--seed", "3", "--results", str(results)])
    text = results.read_text()
    assert "## Noiser recipes on images, against a fixed DM's PF-ODE inversion" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| 20")]
    assert [r[4] for r in rows] == ["default", "s1=10"] and all(r[3].endswith("seed 3") for r in rows)
    for r in rows:
        relative_l2, cosine = float(r[8]), float(r[9])
        assert relative_l2 > 0 and -1 <= cosine <= 1


def test_variants_parse_into_objective_settings():
    bench = load_benchmark("noiser_recipes")
    assert bench.parse_variant("default") == {}
    assert bench.parse_variant("s1=20;target=stopgrad;lr=0.001") == {"s1": 20, "target": "stopgrad", "lr": 0.001}


def test_noiser_recipes_rows_with_the_edit_and_linear_probes(runs, tmp_path):
    bench = load_benchmark("noiser_recipes")
    results, keep = tmp_path / "RESULTS.md", tmp_path / "kept"
    args = ["--cm", str(runs["cm"]), "--dm", str(runs["dm"]), "--steps", "4", "--batch-size", "16", "--num-images", "16",
            "--probes", "edit,edit-dm,linear", "--judge-epochs", "1", "--per-class", "1", "--keep", str(keep),
            "--results", str(results)]
    bench.main(args)
    text = results.read_text()
    assert "## Noiser recipes on images: latents against their uses (edit, edit-dm, linear)" in text
    header = next(line for line in text.splitlines() if line.startswith("| date")).split(" | ")
    assert header[10:19] == ["edit conversion (CM)", "edit SSIM to source (CM)", "prior-latent SSIM (CM)",
                             "edit conversion (DM)", "edit SSIM to source (DM)", "prior-latent SSIM (DM)",
                             "linear probe: latent", "linear probe: features", "command |"]
    (row,) = [line.split(" | ") for line in text.splitlines() if line.startswith("| 20")]
    for i in (10, 13):
        conversion, ssim, prior_ssim = (float(x) for x in row[i:i + 3])
        assert 0 <= conversion <= 1 and -1 <= ssim <= 1 and -1 <= prior_ssim <= 1
    for cell in row[16:18]:
        mean, std = (float(x) for x in cell.split(" ± "))
        assert 0 <= mean <= 1 and std >= 0
    assert (keep / "default-seed0" / "config.json").is_file()  # kept for later probes
    with pytest.raises(SystemExit):  # and never trained over
        bench.main(args)
    assert len([line for line in results.read_text().splitlines() if line.startswith("| 20")]) == 1


def test_noiser_recipes_refuses_unknown_probes(runs, tmp_path):
    bench = load_benchmark("noiser_recipes")
    with pytest.raises(SystemExit):
        bench.main(["--cm", str(runs["cm"]), "--probes", "recon", "--results", str(tmp_path / "R.md")])
    with pytest.raises(SystemExit):  # the DM decoder needs --dm
        bench.main(["--cm", str(runs["cm"]), "--probes", "edit-dm", "--results", str(tmp_path / "R.md")])
