"""The benchmarks' one way to train a model: a recipe string, a seed and a wall-clock budget.

A recipe is `default` or `key=value` pairs joined by `;`: ObjectiveConfig fields (`objective=edm`,
`objective=cd-inversion`, `teacher=exact|dm|RUN`, `teacher_solver`, `teacher_steps`, `encode_mass`, `s1`, ...),
`segments`, `init_from=dm|RUN` and `lr`. The word `dm` names the diffusion model the benchmark trained.
"""

from __future__ import annotations

from pathlib import Path

from alignlearn.config import TrainConfig, make_run_config
from alignlearn.data import load_data
from alignlearn.objectives import ObjectiveConfig
from alignlearn.trainer import TrainResult, train

FLOATS = {"p_mean", "p_std", "huber_c", "target_ema", "lr", "encode_mass"}
INTS = {"s0", "s1", "curriculum_steps", "teacher_steps", "segments"}


def parse_variant(text: str) -> dict:
    """`default` -> {}; `s1=20;lr=1e-3;teacher=dm` -> {"s1": 20, "lr": 0.001, "teacher": "dm"}."""
    if text == "default":
        return {}
    out = {}
    for pair in text.split(";"):
        k, v = pair.split("=")
        out[k] = float(v) if k in FLOATS else int(v) if k in INTS else v
    return out


def train_model(a, out: Path, recipe_text: str, seed: int, budget_s: float, dm: Path | None = None,
                data=None) -> tuple[str, TrainResult]:
    """Train one model of `recipe_text` for `budget_s` seconds on a.data (or the loaded `data`); `dm` stands
    in for the word dm in it. Returns (a description of the training for the records, the trainer's result)."""
    data = data or load_data(a.data, a.data_dir)
    recipe = parse_variant(recipe_text)
    lr, segments = recipe.pop("lr", a.lr), recipe.pop("segments", 1)
    for key in ("teacher", "init_from"):
        if recipe.get(key) == "dm":
            if dm is None:
                raise SystemExit(f"error: recipe {recipe_text!r} names dm: pass --dm-budget-s")
            recipe[key] = str(dm)
    init_from = recipe.pop("init_from", None)
    tc = TrainConfig(steps=10**6, time_budget_s=budget_s, batch_size=a.batch_size, lr=lr, class_cond=a.class_cond,
                     seed=seed, device=a.device, compile=getattr(a, "compile", False), ckpt_every=10**9, sample_every=10**9,
                     init_from=init_from)
    cfg = make_run_config(ObjectiveConfig(recipe.pop("objective", "ct-inversion"), **recipe), tc, data_name=a.data,
                          shape=data[0].shape, num_classes=data[0].num_classes, preset=a.preset, data_dir=a.data_dir,
                          data_source=data[0].source, segments=segments)
    result = train(cfg, out, show_progress=False, data=data)
    return (f"{a.preset}, {budget_s:.0f} s ({result.step} steps, batch {a.batch_size}), recipe {recipe_text}"
            + (", class-conditional" if a.class_cond else "") + f", seed {seed}"), result
