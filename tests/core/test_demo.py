import json

import pytest

from alignlearn.demo import run_demo
from alignlearn.errors import UserError


@pytest.mark.slow
def test_demo_quick_writes_a_complete_report(tmp_path):
    report = run_demo(tmp_path / "demo", steps=20, quick=True, seed=3, log=lambda s: None)
    text = report.read_text()
    assert "seed 3." in text
    configs = {role: json.loads((tmp_path / "demo/runs" / role / "config.json").read_text())
               for role in ("noiser", "cm", "dm", "noiser_default")}
    assert all(c["train"]["seed"] == 3 for c in configs.values())
    # the adopted recipe: the noiser starts from the demo's DM; the baseline is the default recipe from scratch
    assert configs["noiser"]["train"]["init_from"].endswith("dm") and configs["noiser_default"]["train"]["init_from"] is None
    assert "| default recipe |" in text and "| warm-started from the DM (this demo's noiser) |" in text
    for section in ("## Training", "## Export", "## Fidelity to the PF-ODE endpoint", "## Reconstruction", "## Linear probes",
                    "## Editing with the consistency model"):
        assert section in text
    assert "| CT_Inv | 1 |" in text and "noise floor" in text
    for png in ("training_loss.png", "fidelity/fidelity_trajectory.png", "recon/recon_grid.png", "edit_cm/edit_grid.png", "edit_dm/edit_grid.png"):
        assert (tmp_path / "demo" / png).stat().st_size > 1000
    assert (tmp_path / "demo/noiser.onnx").exists()
    assert "| CT_Inv+CM | 1 + 1 |" in text and "raw pixels" in text
    with pytest.raises(UserError, match="not empty"):
        run_demo(tmp_path / "demo", steps=1, quick=True, log=lambda s: None)
