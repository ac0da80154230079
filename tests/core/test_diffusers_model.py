"""A diffusers UNet2DModel + scheduler as the toolkit's VE denoiser: oracle tests against diffusers' own DDIM loops.

Tiny randomly initialised UNets saved to a temporary folder; nothing is downloaded.
"""

import json

import pytest
import torch

from alignlearn.diffusers_model import DiffusersDenoiser, is_diffusers_model
from alignlearn.models import load_model
from alignlearn.samplers import ddim_invert, ode_sample

from .helpers import assert_one_error_line, run_cli

diffusers = pytest.importorskip("diffusers")


def save_model(folder, prediction_type="epsilon", size=8, channels=1, layout="pipeline"):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type,
                                        clip_sample=False, set_alpha_to_one=True)
    if layout == "pipeline":
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    else:  # a bare UNet2DModel folder with its scheduler config beside it
        unet.save_pretrained(folder)
        scheduler.save_config(folder)
    return folder


def vp_sigma(abar):
    return ((1 - abar) / abar) ** 0.5


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_sampling_through_the_adapter_equals_diffusers_ddim_loop(tmp_path, prediction_type):
    """An Euler step of the VE PF-ODE between table levels is a deterministic DDIM step (eta = 0)."""
    folder = save_model(tmp_path / "m", prediction_type)
    model, cfg = load_model(folder)
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    sched = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    sched.set_timesteps(10)
    abar = sched.alphas_cumprod
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = [float(vp_sigma(abar[t])) for t in sched.timesteps] + [0.0]  # set_alpha_to_one: the last step lands at abar = 1
    ours = ode_sample(model, x * (1 + sigmas[0] ** 2) ** 0.5, sigmas)  # VE point x_vp / sqrt(abar)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    assert float((ours - x).abs().max()) <= 1e-5 * float(x.abs().max())  # float32 rounding only
    assert cfg.model.parameterisation == "edm" and cfg.data.shape == (1, 8, 8)
    assert model.eps == pytest.approx(float(vp_sigma(abar[0]))) and model.T == pytest.approx(float(vp_sigma(abar[-1])))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_through_the_adapter_equals_diffusers_inverse_scheduler(tmp_path, prediction_type):
    """DDIMInverseScheduler.step's update, with the UNet evaluated at the sample's own timestep (an Euler step;
    diffusers' inversion pipelines pass the destination timestep instead, one step of lag), equals ddim_invert."""
    folder = save_model(tmp_path / "m", prediction_type)
    model, _ = load_model(folder)
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    inv = diffusers.DDIMInverseScheduler.from_pretrained(folder / "scheduler", set_alpha_to_one=False)
    inv.set_timesteps(10)
    ts, abar = inv.timesteps, inv.alphas_cumprod
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    sigmas = [float(vp_sigma(abar[t])) for t in ts]
    # the clean image is the sample at abar[0] (initial_alpha_cumprod); its VE point is x0 / sqrt(abar[0])
    ours = ddim_invert(model, x0 * (1 + sigmas[0] ** 2) ** 0.5, sigmas)
    x = x0
    with torch.no_grad():
        for i, t in enumerate(ts):  # the first step goes from abar[0] to abar[0]: no move
            x = inv.step(unet(x, ts[max(i - 1, 0)]).sample, t, x).prev_sample
    theirs = x * (1 + sigmas[-1] ** 2) ** 0.5
    assert float((ours - theirs).abs().max()) <= 1e-5 * float(theirs.abs().max())  # float32 rounding only
    x = x0
    with torch.no_grad():
        for t in ts:  # the pipelines' convention: the UNet told the destination timestep
            x = inv.step(unet(x, t).sample, t, x).prev_sample
    lagged = x * (1 + sigmas[-1] ** 2) ** 0.5
    assert float((ours - lagged).abs().max()) > 1e-3 * float(theirs.abs().max())  # the test tells the two apart


def test_a_bare_unet_folder_with_its_scheduler_config_loads(tmp_path):
    folder = save_model(tmp_path / "bare", layout="bare")
    assert is_diffusers_model(folder) and not is_diffusers_model(tmp_path)
    model, _ = load_model(folder)
    x = torch.randn(2, 1, 8, 8)
    assert isinstance(model, DiffusersDenoiser) and model(x, torch.tensor([1.0, 5.0])).shape == x.shape


def test_sigma_to_t_interpolates_in_log_sigma_and_clamps(tmp_path):
    model, _ = load_model(save_model(tmp_path / "m"))
    table = model.log_sigmas.exp()
    t = model.sigma_to_t(torch.stack([table[0], table[10], (table[10] * table[11]).sqrt(), table[-1], table[-1] * 2, table[0] / 2]))
    assert torch.allclose(t, torch.tensor([0.0, 10.0, 10.5, 999.0, 999.0, 0.0]), atol=1e-3)


def test_train_a_noiser_with_a_diffusers_teacher(tmp_path):
    folder = save_model(tmp_path / "m", size=16)
    proc = run_cli("train", "--data", "digits", "--preset", "tiny", "--objective", "cd-inversion", "--teacher", str(folder),
                   "--steps", "3", "--batch-size", "8", "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("probe", "fidelity", "--noiser", str(tmp_path / "run"), "--dm", str(folder), "--num-images", "4",
                   "--ref-steps", "200", "--out", str(tmp_path / "fid"))
    assert proc.returncode == 0, proc.stderr
    assert "DDIM_Inv 30" in proc.stdout
    # the reference runs over the noiser's levels (eps 0.002 to T 80), not the diffusers model's own (0.01 to 157)
    levels = [p["t"] for p in json.loads((tmp_path / "fid" / "report.json").read_text())["trajectory"]]
    assert levels[0] == pytest.approx(0.002) and max(levels) < 80


@pytest.mark.parametrize("edit, needle", [
    (lambda f: (f / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "ScoreSdeVeScheduler"})),
     "scheduler 'ScoreSdeVeScheduler' is not supported"),
    (lambda f: (f / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {**json.loads((f / "scheduler" / "scheduler_config.json").read_text()), "prediction_type": "flow"})),
     "prediction type 'flow' is not supported"),
    (lambda f: None, "takes images of shape (1, 8, 8), the data here are (1, 16, 16)"),
])
def test_bad_diffusers_teachers_are_one_error_line(tmp_path, edit, needle):
    folder = save_model(tmp_path / "m")
    edit(folder)
    proc = run_cli("train", "--data", "digits", "--preset", "tiny", "--objective", "cd-inversion", "--teacher", str(folder),
                   "--steps", "3", "--out", str(tmp_path / "run"), "--quiet")
    assert_one_error_line(proc, needle)
    assert not (tmp_path / "run").exists()


def test_a_diffusers_dm_without_data_asks_for_it_and_a_folder_that_is_no_model_is_refused(tmp_path):
    folder = save_model(tmp_path / "m")
    proc = run_cli("probe", "recon", "--dm", str(folder), "--num-images", "4", "--out", str(tmp_path / "r"))
    assert_one_error_line(proc, "does not name its data set (a diffusers model): pass --data")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    proc = run_cli("probe", "recon", "--dm", str(tmp_path / "other"), "--data", "digits", "--out", str(tmp_path / "r"))
    assert_one_error_line(proc, "only UNet2DModel is supported")
