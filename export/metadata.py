"""The metadata every alignlearn export carries (ONNX metadata_props, engine JSON sidecar).

No torch here: the runtime reads it with numpy and onnx/onnxruntime alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

FORMAT = "alignlearn.encoder/1"
KEY = "alignlearn"


@dataclass
class EncoderMeta:
    """What a caller needs to feed the graph and read its output."""

    image_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int  # 0: unconditional; else labels in [0, num_classes], num_classes = null label
    eps: float
    T: float
    sigma_data: float
    precision: str = "fp32"
    normalisation: str = "images in [-1, 1] = uint8 / 127.5 - 1, NCHW float32"
    data: str = ""
    alignlearn_version: str = ""
    input_names: tuple[str, ...] = ("images",)
    output_name: str = "latents"
    format: str = FORMAT
    extra: dict = field(default_factory=dict)
    segments: int = 1  # network evaluations inside the graph (a K-segment noiser); earlier exports lack the key

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EncoderMeta:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not an alignlearn encoder export")
        d["image_shape"] = tuple(d["image_shape"])
        d["input_names"] = tuple(d["input_names"])
        return cls(**d)

    def props(self) -> dict[str, str]:
        """Flat key/value pairs for ONNX metadata_props: the full JSON plus readable keys."""
        C, H, W = self.image_shape
        return {
            KEY: self.to_json(),
            "image_shape": f"{C},{H},{W}",
            "channels": str(C),
            "num_classes": str(self.num_classes),
            "sigma": f"eps={self.eps},T={self.T},sigma_data={self.sigma_data}",
            "segments": str(self.segments),
            "normalisation": self.normalisation,
            "alignlearn_version": self.alignlearn_version,
        }


def meta_for(cfg, precision: str = "fp32") -> EncoderMeta:
    """The metadata of a noiser run's RunConfig (read as plain attributes: no torch here)."""
    return EncoderMeta(
        image_shape=tuple(cfg.data.shape), num_classes=int(cfg.model.backbone.get("num_classes", 0)),
        eps=cfg.model.eps, T=cfg.model.T, sigma_data=cfg.model.sigma_data, precision=precision,
        data=cfg.data.name, alignlearn_version=cfg.version, segments=getattr(cfg.model, "segments", 1),
    )
