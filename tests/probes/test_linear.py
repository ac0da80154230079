import numpy as np
import torch
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from alignlearn.errors import UserError
from alignlearn.probes.features import NoiserFeatures
from alignlearn.probes.linear import probe_accuracy, run_linear

from ..core.helpers import digits


def test_linear_probe_table(runs, tmp_path):
    report = run_linear(runs["noiser_uncond"], runs["dm"], seeds=2, max_images=600, ddim_steps=5, out_dir=tmp_path)
    names = [r["features"] for r in report["rows"]]
    assert names[0] == "raw pixels" and len(names) == 5
    assert any("latent x_T" in n for n in names) and any("random-init" in n for n in names) and any("DDIM" in n for n in names)
    pixels = report["rows"][0]
    assert pixels["accuracy_mean"] > 0.8 > 3 * report["chance"]  # well above chance (0.1 for digits)
    assert pixels["dim"] == 256 and all(len(r["accuracies"]) == 2 for r in report["rows"])
    md = (tmp_path / "linear.md").read_text()
    assert "| raw pixels | 256 |" in md and (tmp_path / "linear.json").exists()


def test_probe_accuracy_known_answers():
    """Features that encode the class linearly are read perfectly; features independent of it at chance."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)
    separable = np.eye(4)[y] * 5 + rng.normal(size=(400, 4)) * 0.1
    assert probe_accuracy(separable, y, seeds=3) == [1.0, 1.0, 1.0]
    noise = rng.normal(size=(400, 4))
    assert abs(np.mean(probe_accuracy(noise, y, seeds=3)) - 0.25) < 0.1


def test_conditional_noiser_probes_with_the_null_label(runs, tmp_path, monkeypatch):
    """Every label the conditional noiser is given is the null label: no feature sees the class it is probed for."""
    import alignlearn.probes.linear as linear

    seen = []
    real = linear.noiser_features

    def spy(model, images, labels, *args, **kwargs):
        seen.append(labels)
        return real(model, images, labels, *args, **kwargs)

    monkeypatch.setattr(linear, "noiser_features", spy)
    report = run_linear(runs["noiser"], seeds=1, max_images=300, out_dir=tmp_path)
    assert len(report["rows"]) == 4 and len(seen) == 3  # latent, features, random-init features
    null = 10  # digits has 10 classes; the null label is the next index
    assert seen and all(lab is not None and bool((lab == null).all()) for lab in seen)


def test_features_transformer_in_a_pipeline(runs):
    train, test = digits()
    pipe = Pipeline([("features", NoiserFeatures(runs["noiser_uncond"], kind="features")),
                     ("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))])
    X = train.images[:300].flatten(1).numpy()
    pipe.fit(X, train.labels[:300].numpy())
    acc = pipe.score(test.images[:200].flatten(1).numpy(), test.labels[:200].numpy())
    assert acc > 0.2  # tiny 30-step model: above chance (0.1), not a quality claim
    Z = NoiserFeatures(runs["noiser_uncond"]).fit(X).transform(X[:5])
    assert Z.shape == (5, 256) and np.isfinite(Z).all()


def test_unknown_block(runs, tmp_path):
    with pytest.raises(UserError, match="unknown block"):
        run_linear(runs["noiser_uncond"], block="nope", seeds=1, max_images=200, out_dir=tmp_path)


def test_the_test_split_alone_is_the_pool(runs, tmp_path):
    """--split test probes only images no model trained on: the pool is the held-out split, whatever max_images."""
    _, test = digits()
    report = run_linear(runs["noiser_uncond"], seeds=1, max_images=10**6, split="test", out_dir=tmp_path)
    assert report["split"] == "test" and report["images"] == len(test)
    assert "(test split)" in (tmp_path / "linear.md").read_text()
    with pytest.raises(UserError, match="--split must be all or test"):
        run_linear(runs["noiser_uncond"], seeds=1, split="train", out_dir=tmp_path)


def test_a_warm_started_noiser_names_the_same_blocks():
    """--init-from wraps the diffusion network (networks/warm_start.py); its blocks keep their names."""
    from alignlearn.config import ModelConfig
    from alignlearn.models import build_model
    from alignlearn.networks.presets import preset_config
    from alignlearn.networks.warm_start import euler_step_config
    from alignlearn.probes.features import DEFAULT_BLOCK, block_names, noiser_features

    plain = preset_config("tiny", image_shape=(1, 16, 16))
    warm = build_model(ModelConfig("noiser", euler_step_config(plain, 0.5))).eval()
    assert block_names(warm) == block_names(build_model(ModelConfig("noiser", plain)))
    X = noiser_features(warm, torch.randn(4, 1, 16, 16), None, "features", DEFAULT_BLOCK)
    assert X.shape[0] == 4 and np.isfinite(X).all()
