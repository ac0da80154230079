"""The run configuration: what was trained, on what, and how. Written to RUN/config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from . import __version__
from .errors import UserError
from .networks.dropout import DROPOUT_RNGS
from .networks.norm import GROUP_NORMS
from .objectives import ObjectiveConfig
from .schedule import EPS, SIGMA_DATA, T_MAX
from .tracking import SINKS

OPTIMIZERS = ("adam", "radam")
STEPS_CAP_WITH_BUDGET = 1_000_000  # --time-budget without --steps: the clock ends training, this only bounds it


@dataclass
class ModelConfig:
    """A parameterisation (noiser, cm, edm) around a backbone config (with its `arch`)."""

    parameterisation: str
    backbone: dict
    preset: str = ""
    sigma_data: float = SIGMA_DATA
    eps: float = EPS
    T: float = T_MAX
    segments: int = 1  # a noiser's segments: encoding takes this many evaluations (precond.Noiser)


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    shape: tuple[int, ...] = ()
    num_classes: int = 0
    normalisation: str = "[-1, 1] = uint8 / 127.5 - 1"
    source: str = ""  # which copy of the data set was read (CIFAR-10: the original batches or the JPEG copy)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-4
    optimizer: str = "adam"
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    class_cond: bool = False
    cond_drop: float = 0.1
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    compile: bool = False
    cuda_graphs: bool = False  # the compiled passes as CUDA graphs (trainer.CUDA_GRAPH_OPTIONS); needs compile, one GPU
    channels_last: bool = True
    group_norm: str = "auto"  # how GroupNorm computes its statistics (networks/norm.resolve_group_norm); same function
    dropout_rng: str = "replay"  # the shared iCT dropout mask: replayed RNG state, or counter-based (networks/dropout.py)
    log_every: int = 25
    ckpt_every: int = 1000
    sample_every: int = 1000
    time_budget_s: float = 0.0  # > 0: the curriculum follows wall-clock time and training stops when it is spent
    log: str = "none"  # a tracker beside metrics.jsonl: none | tensorboard (tracking.py)
    init_from: str | None = None  # a noiser's warm start: the diffusion-model run it begins as one Euler step of

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "sample_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "grad_clip", "ema_decay", "cond_drop", "time_budget_s"):
            if not math.isfinite(getattr(self, name)):
                flag = "time-budget" if name == "time_budget_s" else name.replace("_", "-")
                raise UserError(f"--{flag} must be a finite number, got {getattr(self, name)}")
        if self.seed < 0 or self.warmup < 0 or self.grad_clip < 0:
            raise UserError(f"--seed, --warmup and --grad-clip must not be negative, got {self.seed}, {self.warmup}, {self.grad_clip}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise UserError(f"--cond-drop must be in [0, 1), got {self.cond_drop}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.group_norm not in ("auto", *GROUP_NORMS):
            raise UserError(f"unknown --group-norm {self.group_norm!r}; choose from auto, {', '.join(GROUP_NORMS)}")
        if self.dropout_rng not in DROPOUT_RNGS:
            raise UserError(f"unknown --dropout-rng {self.dropout_rng!r}; choose from {', '.join(DROPOUT_RNGS)}")
        if self.cuda_graphs and not self.compile:
            raise UserError("--cuda-graphs needs --compile: the graphs are captured from the compiled passes")
        if self.log not in SINKS:
            raise UserError(f"unknown --log {self.log!r}; choose from {', '.join(SINKS)}")
        if self.time_budget_s < 0:
            raise UserError(f"--time-budget must be positive (seconds), got {self.time_budget_s}")


@dataclass
class RunConfig:
    model: ModelConfig
    objective: ObjectiveConfig
    data: DataConfig
    train: TrainConfig
    version: str = field(default=__version__)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        try:
            data = dict(d["data"])
            data["shape"] = tuple(data.get("shape", ()))
            model = ModelConfig(**d["model"])
            objective = dict(d["objective"])
            for key in ("sigma_data", "eps", "T"):  # written twice up to version 0.1.0; the model's copy is kept
                if key in objective and objective.pop(key) != getattr(model, key):
                    raise UserError(f"run configuration disagrees with itself: objective and model {key} differ")
            return cls(
                model=model,
                objective=ObjectiveConfig(**objective),
                data=DataConfig(**data),
                train=TrainConfig(**d["train"]),
                version=d.get("version", "unknown"),
            )
        except (KeyError, TypeError) as e:
            raise UserError(f"run configuration is not an alignlearn config: {e}") from None


def make_run_config(
    objective: ObjectiveConfig,
    train: TrainConfig,
    *,
    data_name: str,
    shape: tuple[int, ...],
    num_classes: int,
    preset: str,
    data_dir: str | None = None,
    image_size: int | None = None,
    dropout: float | None = None,
    data_source: str = "",
    segments: int = 1,
) -> RunConfig:
    """A complete RunConfig: the objective decides the parameterisation, the data the backbone's shape,
    --init-from (train.init_from) a noiser's backbone."""
    from .networks import preset_config
    from .objectives import PARAMETERISATION_OF
    from .schedule import SCHEDULE_DEFAULTS

    if train.class_cond and num_classes < 2:
        raise UserError(f"--class-cond needs a labelled dataset; {data_name} has {num_classes} classes")
    parameterisation = PARAMETERISATION_OF[objective.name]
    grid = objective.s1 or SCHEDULE_DEFAULTS[objective.step_schedule][1]
    if segments != 1 and parameterisation != "noiser":
        raise UserError(f"--segments applies to noisers (ct-inversion, cd-inversion), not {objective.name}")
    if not 1 <= segments <= grid:
        raise UserError(f"--segments must be between 1 and the grid's {grid} intervals (--s1), got {segments}")
    if train.init_from and parameterisation != "noiser":
        raise UserError(f"--init-from warm-starts noisers (ct-inversion, cd-inversion), not {objective.name}")
    classes = num_classes if train.class_cond else 0
    backbone = preset_config(preset, image_shape=shape, num_classes=classes, dropout=dropout)
    model = ModelConfig(parameterisation, backbone, preset, segments=segments)
    data = DataConfig(data_name, data_dir, image_size, tuple(shape), num_classes, source=data_source)
    cfg = RunConfig(model, objective, data, train)
    if train.init_from:
        from .models import warm_start_config

        model.backbone, model.preset = warm_start_config(train.init_from, cfg), ""
    return cfg
