import json

import pytest
import torch
from safetensors.torch import load_file

from alignlearn.trainer import train

from .helpers import digits, tiny_config


def losses(run_dir):
    return [json.loads(line)["loss"] for line in open(run_dir / "metrics.jsonl")]


@pytest.mark.parametrize("objective", ["ct-inversion", "ct", "edm"])
def test_100_steps_lower_the_loss(tmp_path, objective):
    # A fixed N (s0 = s1) keeps the consistency losses comparable across the run:
    # the ict curriculum changes the loss's scale as N grows.
    kw = dict(s0=10, s1=10) if objective != "edm" else {}
    cfg = tiny_config(objective, steps=100, batch_size=32, **kw)
    cfg.train.log_every = 1
    result = train(cfg, tmp_path / objective, show_progress=False, data=digits())
    ls = losses(tmp_path / objective)
    assert len(ls) == 100 and result.step == 100
    first, last = sum(ls[:20]) / 20, sum(ls[-20:]) / 20
    assert last < first, (objective, first, last)


def test_resume_is_exact(tmp_path):
    cfg = tiny_config("ct-inversion", steps=40)
    cfg.model.backbone["dropout"] = 0.1  # dropout masks must replay too
    train(cfg, tmp_path / "straight", show_progress=False, data=digits())
    train(cfg, tmp_path / "split", show_progress=False, data=digits(), stop_after=20)
    assert (tmp_path / "split/checkpoints/step_00000020").is_dir()
    train(cfg, tmp_path / "split", resume=True, show_progress=False, data=digits())
    for name in ("model", "ema"):
        a = load_file(tmp_path / f"straight/checkpoints/step_00000040/{name}.safetensors")
        b = load_file(tmp_path / f"split/checkpoints/step_00000040/{name}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_resume_is_exact_with_ema_target_and_class_labels(tmp_path):
    cfg = tiny_config("ct", steps=30, class_cond=True, target="ema")
    train(cfg, tmp_path / "straight", show_progress=False, data=digits())
    train(cfg, tmp_path / "split", show_progress=False, data=digits(), stop_after=13)
    train(cfg, tmp_path / "split", resume=True, show_progress=False, data=digits())
    for name in ("model", "target"):
        a = load_file(tmp_path / f"straight/checkpoints/step_00000030/{name}.safetensors")
        b = load_file(tmp_path / f"split/checkpoints/step_00000030/{name}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_contents(tmp_path):
    cfg = tiny_config("ct-inversion", steps=20)
    cfg.train.ckpt_every = 10
    train(cfg, tmp_path / "r", show_progress=False, data=digits())
    r = tmp_path / "r"
    saved = json.loads((r / "config.json").read_text())
    assert saved["model"]["parameterisation"] == "noiser" and saved["data"]["shape"] == [1, 16, 16]
    assert json.loads((r / "checkpoints/latest.json").read_text())["path"] == "step_00000020"
    assert (r / "checkpoints/step_00000010").is_dir()
    assert (r / "samples/step_00000020.png").is_file()
    assert not list((r / "checkpoints").glob(".*"))  # no temporary leftovers


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from alignlearn.trainer import TrainingStopped

    cfg = tiny_config("edm", steps=30)
    cfg.train.ckpt_every = 10
    train(cfg, tmp_path / "r", show_progress=False, data=digits(), stop_after=10)
    tr, te = digits()
    bad = type(tr)(tr.name, tr.images.clone(), tr.labels, tr.num_classes)
    bad.images[:] = float("nan")
    with pytest.raises(TrainingStopped) as e:
        train(cfg, tmp_path / "r", resume=True, show_progress=False, data=(bad, te))
    assert "step_00000010" in str(e.value) and e.value.exit_code != 0
    assert json.loads((tmp_path / "r/checkpoints/latest.json").read_text())["path"] == "step_00000010"
    sd = load_file(tmp_path / "r/checkpoints/step_00000010/model.safetensors")
    assert all(torch.isfinite(v).all() for v in sd.values())


class FakeClock:
    """perf_counter advancing 0.05 s per reading: time-budget tests that do not depend on this machine's load."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 0.05
        return self.now


@pytest.fixture
def fake_clock(monkeypatch):
    import alignlearn.budget

    monkeypatch.setattr(alignlearn.budget, "time", FakeClock())


def test_time_budget_stops_on_the_clock_and_spans_the_curriculum(tmp_path, fake_clock):
    cfg = tiny_config("ct-inversion", steps=1_000_000, batch_size=16)
    cfg.train.time_budget_s, cfg.train.log_every = 1.5, 5
    result = train(cfg, tmp_path / "run", show_progress=False, data=digits())
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert 5 <= result.step < 100
    n = [r["N"] for r in rows]
    assert n[-1] > n[0] and n == sorted(n) and n[-1] <= 1281  # ict: N grows with the spent fraction of the budget
    state = json.load(open(result.checkpoint / "state.json"))
    assert 1.5 <= state["budget_spent"] < 1.5 + 5 * 0.05 * 3  # stops at the first step past the budget


def test_time_budget_resumes_with_the_time_already_spent(tmp_path, fake_clock):
    cfg = tiny_config("ct-inversion", steps=1_000_000, batch_size=16)
    cfg.train.time_budget_s, cfg.train.log_every = 1.0, 5
    first = train(cfg, tmp_path / "run", show_progress=False, data=digits(), stop_after=5)
    spent = json.load(open(first.checkpoint / "state.json"))["budget_spent"]
    assert first.step == 5 and 0 < spent < 1.0
    rest = train(cfg, tmp_path / "run", resume=True, show_progress=False, data=digits())
    assert rest.step > 5 and json.load(open(rest.checkpoint / "state.json"))["budget_spent"] >= 1.0


def test_compiled_online_pass_replays_the_target_pass_dropout_mask():
    from alignlearn.models import build_model
    from alignlearn.objectives import _replay_rng
    from alignlearn.compile_options import compile_for_training

    cfg = tiny_config("ct", steps=10)
    cfg.model.backbone["dropout"] = 0.3
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    for p in model.parameters():  # the zero-initialised output layer would hide the mask
        p.data += 0.05 * torch.randn_like(p)
    compiled = compile_for_training(model)
    x, t = torch.randn(8, *digits()[0].shape), torch.full((8,), 5.0)
    torch.manual_seed(1)
    with torch.no_grad(), _replay_rng(x.device):
        target = model(x, t, None)
    with torch.no_grad():
        online = compiled(x, t, None)
        assert not torch.equal(model(x, t, None), online)  # a fresh mask differs: the test can fail
    assert torch.allclose(online, target, atol=1e-5)
    torch.manual_seed(1)
    with torch.no_grad(), _replay_rng(x.device):  # the trainer compiles the EMA target as well
        compiled_target = compiled(x, t, None)
    assert torch.allclose(compiled_target, target, atol=1e-5)
    # the EMA target is updated in place between steps: the compiled graph must read the new weights
    with torch.no_grad():
        torch._foreach_lerp_(list(model.parameters()), [torch.zeros_like(p) for p in model.parameters()], 0.5)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x, t, None), model(x, t, None), atol=1e-5)


def test_cuda_graphs_compile_with_the_measured_options(monkeypatch):
    """--cuda-graphs adds exactly the settings docs/performance.md measured (CUDA graphs, forced channels-last
    layouts, the recompute thresholds, small reductions kept) on top of the trainer's, and leaves the shared
    dropout mask's fallback_random in place."""
    import alignlearn.compile_options as options

    seen = []
    monkeypatch.setattr(torch, "compile", lambda net, options: seen.append(options) or net)
    net = torch.nn.Linear(2, 2)
    options.compile_for_training(net)
    options.compile_for_training(net, cuda_graphs=True)
    assert seen == [{"fallback_random": True},
                    {"fallback_random": True, "triton.cudagraphs": True, "force_layout_optimization": True,
                     "realize_reads_threshold": 64, "realize_acc_reads_threshold": 64,
                     "realize_opcount_threshold": 1000, "unroll_reductions_threshold": 1}]
    assert options.INDUCTOR_OPTIONS == {"fallback_random": True}  # module settings untouched


def test_each_step_is_one_cuda_graph_generation(tmp_path, monkeypatch):
    """Inductor's cudagraph trees start a new generation, freeing the previous calls' outputs, at a compiled call
    with no backward pending: without a mark, the online pass would free the target pass's output before the
    loss reads it. The trainer marks each step's start, so both passes (and the backward) share one generation."""
    import alignlearn.trainer as trainer

    events = []

    class Traced(torch.nn.Module):  # stands in for the compiled module: the call order is what is tested
        def __init__(self, module, cuda_graphs=False):
            super().__init__()
            self.module = module

        def forward(self, *args):
            events.append("online" if torch.is_grad_enabled() else "target")
            return self.module(*args)

    monkeypatch.setattr(trainer, "compile_for_training", Traced)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))
    cfg = tiny_config("ct-inversion", steps=3)
    cfg.train.compile = True
    train(cfg, tmp_path / "run", show_progress=False, data=digits())
    assert events == ["mark", "target", "online"] * 3
