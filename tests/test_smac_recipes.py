"""SMAC's paper ablations (Table 2, §4.3; Table 4) are the paper's experiment: each paper-scale recipe is smac/vox256
(VoxCeleb, official widths, schedule and batch 16) with exactly the change §4.3 / Table 4 describes, and each
``*_small`` twin makes the same change to smac/small.  Checked on the resolved configs and on meta-device builds
(shapes only, no weights), so the full-width models cost no time."""
from pathlib import Path

import pytest
import torch

from thkit.api import create_model
from thkit.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "smc", "mmc", "mmc_sac", "full", "shared", "equal", "progressive")
TABLE2 = ("baseline", "smc", "mmc", "mmc_sac", "full")
ALL = tuple(range(4))  # the 4 scales, coarse (32 px latent) to fine (256 px)

# what each variant changes in smac/vox256 (paths of the resolved config); test_size is only the smoke-test size
MISSING = object()
EXPECTED_CHANGES = {
    # §4.3 (1): no compensatory codebook at all; no codebook losses; no driving heatmaps / appearance target needed
    "baseline": {
        "model.compensator": None,
        "model.warp_levels": None,
        "model.encoder.out_indices": ("L0", "L1", "L2", "latent"),
        "model.motion.return_driving_heatmap": False,
        "losses.codebook": None,
        "losses.flow_reconstruction": None,
        "custom_hooks.GeneratorEMAHook.parts": ("encoder", "decoder"),  # the official EMA covers net_g
    },
    # §4.3 (2): one motion codebook at the first (coarsest) scale only, no appearance codebook
    "smc": {"model.compensator.motion_scales": (0, ), "model.compensator.appearance": None,
            "losses.codebook.appearance_weight": 0.0},
    # §4.3 (3): motion codebooks at all scales, no appearance codebook
    "mmc": {"model.compensator.appearance": None, "losses.codebook.appearance_weight": 0.0},
    # §4.3 (4): + an appearance codebook at a single scale
    "mmc_sac": {"model.compensator.appearance_scales": (0, )},
    # §4.3 (5): the full model = smac/vox256
    "full": {},
    # Table 4
    "shared": {"model.compensator.motion.allocation.type": "shared",
               "model.compensator.appearance.allocation.type": "shared"},
    "equal": {"model.compensator.motion.allocation.type": "equal",
              "model.compensator.appearance.allocation.type": "equal"},
    "progressive": {},  # the official default, stated explicitly
}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(h, dict) and "type" in h for h in v):
            out.update(_flat({h["type"]: h for h in v}, key + "."))  # hooks: by type
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _diff(a, b):
    """``{path: value in a}`` for every leaf where ``a`` differs from ``b`` (a subtree replaced by ``None`` is one
    entry), ``test_size`` left out."""
    fa, fb = _flat(a), _flat(b)
    out = {}
    for k in set(fa) | set(fb):
        if k == "test_size" or fa.get(k, MISSING) == fb.get(k, MISSING):
            continue
        parent = next((p for p in _parents(k) if fa.get(p, MISSING) is None), None)
        if parent is not None:
            out[parent] = None
        else:
            out[k] = fa.get(k, MISSING)
    return out


def _parents(key):
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@pytest.fixture(scope="module")
def cfgs():
    names = ["vox256", "small", *VARIANTS, *(f"{v}_small" for v in VARIANTS)]
    return {n: load_recipe(f"smac/{n}").to_dict() for n in names}


@pytest.fixture(scope="module")
def meta_models():
    """The paper-scale variants built on the meta device (parameter shapes, no storage)."""
    out = {}
    for name in ("vox256", *VARIANTS):
        with torch.device("meta"):
            out[name] = create_model(f"smac/{name}")
    return out


def _shapes(module):
    return {k: tuple(p.shape) for k, p in module.state_dict().items()}


def test_full_resolves_to_vox256(cfgs, meta_models):
    assert cfgs["full"] == cfgs["vox256"]
    assert _shapes(meta_models["full"]) == _shapes(meta_models["vox256"])
    n = sum(p.numel() for p in meta_models["full"].parameters())
    assert n == 30_118_854 + 14_258_268 + 37_796_433  # official net_g + keypoint detector + dense motion


@pytest.mark.parametrize("variant", VARIANTS)
def test_paper_variant_differs_from_full_exactly_as_the_paper_says(cfgs, variant):
    assert _diff(cfgs[variant], cfgs["full"]) == EXPECTED_CHANGES[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_small_twin_makes_the_same_change_to_small(cfgs, variant):
    assert _diff(cfgs[f"{variant}_small"], cfgs["small"]) == EXPECTED_CHANGES[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_paper_variant_is_the_paper_experiment(cfgs, variant):
    """VoxCeleb data, 256 px, the official widths, schedule, optimisers, EMA and an effective batch of 16."""
    cfg, full = cfgs[variant], cfgs["full"]
    assert (cfg["image_size"], cfg["num_kp"], cfg["nf"], tuple(cfg["ch_mult"])) == (256, 15, 64, (1, 2, 2, 4))
    assert cfg["train_dataloader"]["dataset"]["type"] == full["train_dataloader"]["dataset"]["type"]
    assert "synthetic" not in cfg["train_dataloader"]["dataset"]["type"].lower()
    assert cfg["train_dataloader"]["batch_size"] * cfg["smac_world_size"] == cfg["smac_batch_size"] == 16
    assert cfg["train_cfg"]["max_iters"] == 250_000
    assert cfg["param_scheduler"] == [dict(type="MultiStepLR", by_epoch=False, milestones=[200_000, 225_000],
                                           gamma=0.5)]
    for gd in ("generator", "discriminator"):
        assert cfg["optim_wrapper"][gd]["optimizer"] == dict(type="Adam", lr=8e-5, betas=(0.9, 0.99))
    for key in ("discriminator", "val_dataloader", "motion_transfer"):  # custom_hooks: the exact-diff test
        assert cfg[key] == full[key], key
    comp = cfg["model"]["compensator"]
    if comp is not None:
        if comp.get("motion"):
            assert comp["motion"]["codebook"]["num_codes"] == 1024 and comp["motion"]["codebook"]["dim"] == 32
            assert comp["motion"]["transformer"]["num_heads"] == 8
        if comp.get("appearance"):
            assert comp["appearance"]["codebook"]["num_codes"] == 1024 and comp["appearance"]["codebook"]["dim"] == 256
            assert comp["appearance"]["transformer"]["num_heads"] == 8


def test_built_variants_have_the_parts_the_paper_names(meta_models):
    """Module presence and the scales each codebook serves, read from the built (meta) models."""
    def scales(name):
        c = meta_models[name].compensator
        if c is None:
            return None
        return (tuple(c.motion_scales) if c.motion is not None else (),
                tuple(c.appearance_scales) if c.appearance is not None else ())

    assert scales("baseline") is None
    assert scales("smc") == ((0, ), ())
    assert scales("mmc") == (ALL, ())
    assert scales("mmc_sac") == (ALL, (0, ))
    assert scales("full") == (ALL, ALL)
    # each row of Table 2 adds parts: strictly more parameters, and the parts outside the compensator are the same
    counts = [sum(p.numel() for p in meta_models[n].parameters()) for n in TABLE2]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    full = meta_models["full"]
    for name in TABLE2:
        for part in ("keypoint_detector", "motion", "encoder", "decoder"):
            assert _shapes(getattr(meta_models[name], part)) == _shapes(getattr(full, part)), (name, part)
    # the allocations change which codes a scale uses, not the parameters
    for name in ("shared", "equal", "progressive"):
        assert _shapes(meta_models[name]) == _shapes(full)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ema_covers_parts_the_variant_has(cfgs, meta_models, variant):
    """The official EMA covers net_g (encoder, compensator, decoder): every part it names exists in the model."""
    (ema, ) = [h for h in cfgs[variant]["custom_hooks"] if h["type"] == "GeneratorEMAHook"]
    assert ema["parts"] and all(getattr(meta_models[variant], p, None) is not None for p in ema["parts"])
    assert set(ema["parts"]) == {"encoder", "decoder"} | ({"compensator"} if variant != "baseline" else set())


@pytest.mark.parametrize("variant, ranges", [
    ("shared", [(0, 1024)] * 4),  # "sharing all codes at every scale"
    ("equal", [(0, 256), (256, 512), (512, 768), (768, 1024)]),  # "splitting the codes equally"
    ("progressive", [(0, 256), (0, 512), (0, 768), (0, 1024)]),  # scale s uses the first s groups
])
def test_table4_code_ranges(meta_models, variant, ranges):
    comp = meta_models[variant].compensator
    for part in (comp.motion, comp.appearance):
        got = [tuple(int(i) for i in part.allocation.bounds(s, 4, part.codebook.num_codes)) for s in ALL]
        assert got == ranges


def test_readme_names_every_smac_recipe():
    text = (ROOT / "recipes" / "smac" / "README.md").read_text()
    for path in sorted((ROOT / "recipes" / "smac").glob("*.py")):
        assert f"smac/{path.stem}`" in text, path.stem
