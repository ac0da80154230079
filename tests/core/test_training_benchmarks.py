"""Smoke tests of the training benchmarks (benchmarks/throughput.py, profile_step.py) on the CPU."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # profile_step imports throughput as a sibling
    import profile_step
    import throughput

    from alignlearn.trainer import CUDA_GRAPH_OPTIONS, INDUCTOR_OPTIONS

    saved = [(d, dict(d)) for d in (INDUCTOR_OPTIONS, CUDA_GRAPH_OPTIONS)]
    yield throughput, profile_step
    for d, before in saved:  # --inductor edits the trainer's settings for the process
        d.clear()
        d.update(before)
    for name in ("profile_step", "throughput"):
        sys.modules.pop(name, None)


def test_inductor_options_parse_booleans_and_numbers(benchmarks):
    throughput, _ = benchmarks
    assert throughput.inductor_options(["triton.cudagraphs=true", "fallback_random=False", "n=3", "m=-2", "s=x"]) == {
        "triton.cudagraphs": True, "fallback_random": False, "n": 3, "m": -2, "s": "x"}
    with pytest.raises(SystemExit):
        throughput.inductor_options(["no-equals-sign"])


def test_inductor_options_win_over_the_cuda_graph_settings(benchmarks):
    """--inductor can put back inductor's defaults under --cuda-graphs, to time the trainer's settings against them."""
    throughput, _ = benchmarks
    from alignlearn.trainer import training_inductor_options

    throughput.apply_inductor_options(["realize_reads_threshold=4", "max_autotune=true"])
    with_graphs = training_inductor_options(cuda_graphs=True)
    assert with_graphs["realize_reads_threshold"] == 4 and with_graphs["max_autotune"] is True
    assert with_graphs["realize_acc_reads_threshold"] == 64  # the others untouched
    assert training_inductor_options()["realize_reads_threshold"] == 4


def test_throughput_row_names_the_variant(benchmarks, tmp_path):
    throughput, _ = benchmarks
    results = tmp_path / "RESULTS.md"
    throughput.main(["--data", "digits", "--preset", "tiny", "--batch-size", "8", "--steps", "4", "--log-every", "2",
                     "--group-norm", "per-channel", "--device", "cpu", "--results", str(results),
                     "--json", str(tmp_path / "run.json")])
    row = [line for line in results.read_text().splitlines() if line.startswith("| 20")][0].split(" | ")
    assert row[6] == "fp32, per-channel GroupNorm" and float(row[7].replace(",", "")) > 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["img_per_s"] > 0 and record["cudagraph_skips"] == 0  # nothing compiled, nothing skipped


def test_profile_reports_per_step_times(benchmarks, tmp_path, capsys):
    _, profile_step = benchmarks
    out = tmp_path / "profile.txt"
    profile_step.main(["--data", "digits", "--preset", "tiny", "--batch-size", "8", "--steps", "2", "--warmup-steps", "1",
                       "--device", "cpu", "--out", str(out)])
    head = out.read_text().splitlines()[0]
    assert "per step at batch 8" in head and "CPU ops" in head
    wall = float(head.split("wall ")[1].split(" ms")[0])
    busy = float(head.split("(self time) ")[1].split(" ms")[0])
    assert wall > 0 and busy > 0
    text = out.read_text()
    assert "aten::convolution" in text  # the tiny UNet's convolutions are in the table
    # Unfused work is traced to the ops that launched it, with input shapes: the step's optimizer and
    # its backward pass are among them.
    sites = text.split("launch sites")[1].splitlines()[2:]
    assert any("<- Optimizer.step#Adam.step" in s for s in sites)
    assert any("autograd::engine::evaluate_function" in s and "[[8, " in s for s in sites)
    assert any(" strides [[" in s for s in sites)


def test_launch_sites_name_the_layout_a_copy_converts(benchmarks):
    """A channels-last tensor made contiguous: its copy is traced with the source and target strides."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    _, profile_step = benchmarks
    x = torch.randn(8, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        x.contiguous()
    sites = profile_step.launch_sites(prof, cuda=False, strides=profile_step.input_strides(prof))
    copy = [k for k in sites if k.startswith("aten::copy_")]
    assert copy and "strides [[256, 16, 4, 1], [256, 1, 64, 16]]" in copy[0] and "<- aten::clone" in copy[0]


def test_layout_decision_reports_each_graph(benchmarks, capsys):
    """Forced on, every compiled graph of the tiny preset takes channels-last buffers; the decoder's
    convolutions after the skip concatenation (32 + 32 -> 32 and 32 + 16 -> 16 channels) are named."""
    import layout_decision

    try:
        layout_decision.main(["--preset", "tiny", "--image-size", "16", "--inductor", "force_layout_optimization=true"])
    finally:
        sys.modules.pop("layout_decision", None)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["training", "backward", "no-grad"]
    assert all(" ON " in line for line in lines)
    assert "(32, 64, 3, 3)" in lines[0] and "(16, 48, 3, 3)" in lines[0] and "(16, 32, 3, 3)" in lines[0]


@pytest.fixture
def traffic_bound(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import traffic_bound

    yield traffic_bound
    for name in ("traffic_bound", "throughput"):
        sys.modules.pop(name, None)


def _traced(fn, *args):
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(fn, tracing_mode="fake")(*args)


def test_traffic_floor_counts_a_fused_region_once(traffic_bound):
    """conv -> (mean-centre, relu, scale): one region, reading the convolution's output once, writing once,
    and reading it again for the reduction in the two-kernel estimate."""
    import torch

    def f(x, w):
        h = torch.ops.aten.convolution(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        return (torch.relu(h - h.mean(dim=(2, 3), keepdim=True)) * 2,)

    t = traffic_bound.graph_traffic(_traced(f, torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)))
    h_bytes = 2 * 4 * 8 * 8 * 4
    assert t["regions"] == 1 and dict(t["library"]) == {"convolution": 1}
    assert (t["read"], t["written"], t["reread"], t["random"]) == (h_bytes, h_bytes, h_bytes, 0)


def test_traffic_floor_counts_eager_dropout_apart(traffic_bound):
    """x*2 -> eager dropout -> *3: two regions on either side, and the dropout kernel's own input, output and mask."""
    import torch

    def f(x):
        out, mask = torch.ops.aten.native_dropout(x * 2, 0.1, True)
        return out * 3, mask

    t = traffic_bound.graph_traffic(_traced(f, torch.randn(4, 16)))
    fp32, mask = 4 * 16 * 4, 4 * 16
    assert t["regions"] == 2 and not t["library"]
    assert t["read"] == 2 * fp32 and t["written"] == 2 * fp32 and t["reread"] == 0
    assert t["random"] == fp32 + fp32 + mask


def test_traffic_floor_counts_inductors_own_random_numbers_as_fused(traffic_bound):
    """Without fallback_random, dropout's mask is drawn inside inductor's kernel (Philox): no traffic of its own."""
    import torch
    import torch._inductor.inductor_prims  # noqa: F401  (registers the prims)

    def f(x):
        seed = torch.ops.prims.inductor_lookup_seed(torch.ops.prims.inductor_seeds(1, torch.device("cpu")), 0)
        return (x * (torch.ops.prims.inductor_random([4, 16], seed, "rand") > 0.1) * 3,)

    t = traffic_bound.graph_traffic(_traced(f, torch.randn(4, 16)))
    assert (t["regions"], t["read"], t["written"], t["random"]) == (1, 4 * 16 * 4, 4 * 16 * 4, 0)


def test_traffic_bound_runs_on_a_preset(traffic_bound):
    report = traffic_bound.main(["--preset", "tiny", "--image-size", "16", "--batch-size", "64", "--conv-ms", "1.0"])
    graphs = report["graphs"]
    assert set(graphs) == {"training forward", "backward", "no-grad forward"}
    assert all(g["read"] > 0 and g["written"] > 0 for g in graphs.values())
    assert graphs["backward"]["library"]["convolution_backward"] == graphs["training forward"]["library"]["convolution"]
    floor, likely = report["floor"], report["+reduction re-reads"]
    assert 0 < floor["bytes"] < likely["bytes"] and floor["step_ms"] > 1.0
    assert 0 < likely["peak_fraction"] < floor["peak_fraction"]


def test_host_syncs_tell_per_step_sites_from_one_off_ones(monkeypatch):
    import warnings

    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import host_syncs

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: None)  # no CUDA here: the warnings are ours
    here = Path(__file__).resolve().parent

    def run(steps):
        def loop():
            for _ in range(steps):
                warnings.warn(host_syncs.SYNC_MESSAGE)  # stands in for a .item() in every step
            warnings.warn(host_syncs.SYNC_MESSAGE + " at the end")  # stands in for the final checkpoint
            warnings.warn("an unrelated warning")
        return host_syncs.record_syncs(loop, root=here)

    short, long = run(2), run(4)
    (per_step,) = host_syncs.per_step_sites(short, long)
    assert per_step.startswith("test_training_benchmarks.py:")
    assert "warnings.warn(host_syncs.SYNC_MESSAGE)" in per_step and "<-" not in per_step
    assert sum(short.values()) == 3 and sum(long.values()) == 5  # the unrelated warning is not counted
    text = host_syncs.table(short, long, 2)
    assert "1 site(s) sync during the steps" in text and "per step" in text and "once" in text
    sys.modules.pop("host_syncs", None)


def test_gpu_codegen_shows_the_native_group_norm_backward_copying_layouts(benchmarks, tmp_path):
    """Inductor's CUDA code for the tiny step, generated without a GPU: with forced channels-last layouts,
    the native GroupNorm's backward (its decomposition reshapes to (N, G, C/G, HW)) hands its gradients on
    through transposing kernels; the per-channel GroupNorm, the same function, through none."""
    pytest.importorskip("triton")  # inductor's CUDA code generation imports it
    import gpu_codegen  # the benchmarks fixture puts benchmarks/ on the path and restores the trainer's settings

    def group_norm_transposes(group_norm):
        (backward,) = gpu_codegen.main(["--preset", "tiny", "--image-size", "16", "--batch-size", "8", "--graph", "backward",
                                        "--group-norm", group_norm, "--inductor", "force_layout_optimization=true",
                                        "--out", str(tmp_path / f"{group_norm}.log")])
        assert backward["name"] == "1_backward" and sum(backward["triton"].values()) > 100
        assert backward["fallback"]["convolution_backward"] > 0  # cuDNN's, as on a GPU
        assert set(backward["traffic"]) == set(backward["launches"]) and sum(backward["traffic"].values()) > 0
        return sum(v for ops, v in backward["transposes"].items() if "group_norm" in ops)

    try:
        native = group_norm_transposes("native")
        per_channel = group_norm_transposes("per-channel")
    finally:
        for name in ("gpu_codegen", "inductor_code", "traffic_bound"):
            sys.modules.pop(name, None)
    assert native >= 10 and per_channel == 0
    import torch

    assert not torch.cuda.is_available()  # the pretence ends with the generation


def test_inductor_code_counts_each_launch_of_a_kernel_and_its_traffic(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import inductor_code

    kernel = ("triton_poi_fused_native_group_norm_silu_0 = async_compile.triton('k', '''",
              "@triton_heuristics.pointwise(inductor_meta={'kernel_name': 'k', 'kernel_num_gb': 0.25, 'num_load': 1},",
              "def k(in_ptr0, out_ptr0, ynumel, xnumel, YBLOCK, XBLOCK):",
              "    tmp0 = tl.load(in_ptr0 + (x2 + 64*y3), xmask & ymask)",
              "    tl.store(out_ptr0 + (y0 + 1024*x2 + 65536*y1), tmp0, xmask & ymask)",
              "''', device_str='cuda')")
    calls = ("        triton_poi_fused_native_group_norm_silu_0.run(buf0, buf1, 1024, 64, stream=raw_stream0)",
             "        triton_poi_fused_native_group_norm_silu_0.run(buf2, buf3, 1024, 64, stream=raw_stream0)",
             "        extern_kernels.convolution(buf1, primals_1, stride=(1, 1))")
    log = "\n".join(inductor_code.MARK + line for line in ("# AOT ID: ['1_backward']", *kernel, *calls))
    try:
        (graph,) = [inductor_code.summarise(g) for g in inductor_code.split_graphs(log)]
    finally:
        sys.modules.pop("inductor_code", None)
    assert graph["name"] == "1_backward" and graph["triton"] == {"pointwise": 2} and graph["library"] == {"convolution": 1}
    assert graph["transposes"] == {"native_group_norm_silu": 2} and graph["transposed_elements"] == 2 * 1024 * 64
    assert graph["traffic"] == {"native_group_norm_silu": 0.5} and graph["launches"] == {"native_group_norm_silu": 2}


@pytest.mark.parametrize("rng", ["replay", "counter"])
def test_dropout_mask_check_finds_the_shared_mask(benchmarks, capsys, rng):
    """The compiled online and target passes of the trainer's step draw one dropout mask (iCT), and the check
    tells that apart from another mask's effect (here on the CPU, where there are no CUDA graphs)."""
    import dropout_masks

    dropout_masks.main(["--device", "cpu", "--preset", "tiny", "--channels-last", "--dropout-rng", rng])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    online_vs_target = float(line.split("online vs target ")[1].split(",")[0])
    fresh = float(line.split("fresh mask ")[1].split(":")[0])
    assert line.endswith("same mask") and online_vs_target < 1e-4 < fresh
    sys.modules.pop("dropout_masks", None)


def test_gpu_codegen_moves_every_cpu_factory_call_to_the_gpu(benchmarks):
    """The traced graphs are made on the CPU; their factory calls must allocate on the (fake) GPU, whether the
    device is a keyword (zeros) or positional (inductor_seeds, from inductor's own dropout random numbers)."""
    import torch
    import torch._inductor.inductor_prims  # noqa: F401  (registers prims.inductor_seeds)

    import gpu_codegen

    g = torch.fx.Graph()
    seeds = g.call_function(torch.ops.prims.inductor_seeds.default, (2, torch.device("cpu")))
    zeros = g.call_function(torch.ops.aten.zeros.default, ([3],), {"device": torch.device("cpu")})
    g.output((seeds, zeros))
    gm = gpu_codegen.on_cuda(torch.fx.GraphModule(torch.nn.Module(), g))
    for name in ("gpu_codegen", "inductor_code", "traffic_bound"):
        sys.modules.pop(name, None)
    seeds, zeros = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert seeds.args == (2, torch.device("cuda", 0)) and zeros.kwargs["device"] == torch.device("cuda", 0)


def test_kernel_sass_counts_the_counter_dropout_hash_per_element(benchmarks):
    """Inductor's H100 kernel for SiLU after counter dropout, compiled to sm_90 SASS without a GPU: the hash's
    32-bit arithmetic costs 14 instructions an element or fewer (the same hash in int64 cost 18)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        get_ptxas(90).path  # Triton's own ptxas, shipped in its wheel
    except Exception as e:  # no Triton, another release's layout, or no ptxas
        pytest.skip(f"no sm_90 compiler from Triton here ({type(e).__name__})")
    import torch
    from torch._inductor.decomposition import select_decomp_table

    import gpu_codegen
    import kernel_sass

    from alignlearn.networks.dropout import keep_mask

    x = torch.empty(8, 64, 16, 16, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    seed = torch.tensor(5)

    def with_mask(x, s):
        return (torch.nn.functional.silu(torch.where(keep_mask(x.shape, 0.1, s, 3), x / 0.9, 0)),)

    def without(x, s):
        return (torch.nn.functional.silu(x / 0.9),)

    per_element = {}
    try:
        for fn in (with_mask, without):
            gm = torch.fx.experimental.proxy_tensor.make_fx(fn, decomposition_table=select_decomp_table(),
                                                            tracing_mode="fake")(x, seed)
            with gpu_codegen.pretend_h100(), torch._inductor.config.patch(profile_bandwidth=True):
                log = gpu_codegen.as_output_code_log([("no-grad forward", gpu_codegen.generate(gm, "no-grad forward"))])
            (rows,) = kernel_sass.analyse_log(log, jobs=1).values()
            (row,) = rows.values()  # one fused kernel
            assert row["launches"] == 1 and row["elements"] == x.numel() and row["memory_ms"] > 0 < row["issue_ms"]
            per_element[fn.__name__] = row["per_element"]
    finally:
        for name in ("gpu_codegen", "inductor_code", "traffic_bound", "kernel_sass"):
            sys.modules.pop(name, None)
    assert 6 <= per_element["with_mask"] - per_element["without"] <= 14, per_element


def test_kernel_sass_report_without_byte_estimates(benchmarks):
    """A GPU run's TORCH_LOGS code has no byte estimates: the report gives the issue floor and no memory floor
    (not a memory floor of zero, which would call every kernel issue-bound)."""
    import kernel_sass

    rows = {"k_small": dict(launches=2, elements=10, memory_ms=0.0, bytes_known=False, per_element=30.0, issue_ms=0.1),
            "k_big": dict(launches=1, elements=99, memory_ms=0.0, bytes_known=False, per_element=90.0, issue_ms=0.5)}
    try:
        text = kernel_sass.report("log 1_backward", rows, top=5)
    finally:
        sys.modules.pop("kernel_sass", None)
    first, _, big, small = text.splitlines()
    assert "issue floor 0.60 ms" in first and "no byte estimates" in first and "memory floor 0" not in first
    assert big.split()[-1] == "k_big" and small.split()[-1] == "k_small"
    rows["k_big"].update(bytes_known=True, memory_ms=0.2)
    assert "memory floor 0.20 ms" in kernel_sass.report("log", rows, top=5).splitlines()[0]
