"""Every recipe in recipes/ builds and runs one forward pass (small input), so no recipe can rot."""
import pytest
import torch

from thkit.builder import build, build_model
from thkit.recipe import list_recipes, load_recipe

# A paper-scale recipe with a CPU-sized ``<name>_small`` twin that makes the same change (the SMAC ablations) is not
# run here at full width: its twin runs the same code path, and tests/test_smac_recipes.py builds the paper-scale
# model on the meta device and checks its widths, parts and parameter counts.
RECIPES = [p for p in list_recipes() if not (p.stem != "small" and p.with_name(f"{p.stem}_small.py").is_file())]


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(p.parent.parent)) for p in RECIPES])
def test_recipe_builds_and_runs(path):
    base = load_recipe(path)
    size = int(base.get("test_size", min(int(base.get("image_size", 64)), 128)))
    cfg = load_recipe(path, size=size)  # built for the size it runs at (parts that depend on it follow)
    model = build_model(cfg.model, image_size=cfg.get("image_size")).eval()
    lo, hi = cfg.model.get("input_range", (0.0, 1.0))
    g = torch.Generator().manual_seed(0)
    src = torch.rand(1, 3, size, size, generator=g) * (hi - lo) + lo
    drv = torch.rand(1, 3, size, size, generator=g) * (hi - lo) + lo
    with torch.inference_mode():
        out = model(src, drv)
    assert out["prediction"].shape == (1, 3, size, size)
    assert torch.isfinite(out["prediction"]).all()
    if cfg.get("discriminator"):
        d = build("discriminator", cfg.discriminator.to_dict(), path="discriminator")
        assert sum(p.numel() for p in d.parameters()) > 0
