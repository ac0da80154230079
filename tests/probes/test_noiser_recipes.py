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
