"""Smoke tests of the training-throughput benchmark (benchmarks/throughput.py) on the CPU."""

import json
import sys
from pathlib import Path

import pytest

from alignlearn.results import read_records

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def throughput(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import throughput

    from alignlearn.compile_options import CUDA_GRAPH_OPTIONS, INDUCTOR_OPTIONS

    saved = [(d, dict(d)) for d in (INDUCTOR_OPTIONS, CUDA_GRAPH_OPTIONS)]
    yield throughput
    for d, before in saved:  # --inductor edits the trainer's settings for the process
        d.clear()
        d.update(before)
    sys.modules.pop("throughput", None)


def test_inductor_options_parse_booleans_and_numbers(throughput):
    assert throughput.inductor_options(["triton.cudagraphs=true", "fallback_random=False", "n=3", "m=-2", "s=x"]) == {
        "triton.cudagraphs": True, "fallback_random": False, "n": 3, "m": -2, "s": "x"}
    with pytest.raises(SystemExit):
        throughput.inductor_options(["no-equals-sign"])


def test_inductor_options_win_over_the_cuda_graph_settings(throughput):
    """--inductor can put back inductor's defaults under --cuda-graphs, to time the trainer's settings against them."""
    from alignlearn.compile_options import training_inductor_options

    throughput.apply_inductor_options(["realize_reads_threshold=4", "max_autotune=true"])
    with_graphs = training_inductor_options(cuda_graphs=True)
    assert with_graphs["realize_reads_threshold"] == 4 and with_graphs["max_autotune"] is True
    assert with_graphs["realize_acc_reads_threshold"] == 64  # the others untouched
    assert training_inductor_options()["realize_reads_threshold"] == 4


def test_throughput_record_names_the_variant(throughput, tmp_path):
    throughput.main(["--data", "digits", "--preset", "tiny", "--batch-size", "8", "--steps", "4", "--log-every", "2",
                     "--group-norm", "per-channel", "--device", "cpu", "--results", str(tmp_path / "results"),
                     "--json", str(tmp_path / "run.json")])
    [row] = read_records(tmp_path / "results", "training_throughput")
    assert row["precision"] == "fp32, per-channel GroupNorm" and float(row["img/s (median)"].replace(",", "")) > 0
    assert row["command"].startswith("`python ") and "--group-norm per-channel" in row["command"]
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["img_per_s"] > 0 and record["cudagraph_skips"] == 0  # nothing compiled, nothing skipped
