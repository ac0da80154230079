"""alignlearn: images to diffusion noise latents in one network evaluation (CT Inversion)."""

__version__ = "0.2.0"
