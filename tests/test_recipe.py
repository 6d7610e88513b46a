"""Recipes: _base_ inheritance, overrides, and the errors users make."""
import textwrap

import pytest

from thkit.errors import RecipeError
from thkit.recipe import build_from_recipe, list_recipes, load_recipe


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_base_inheritance_and_overrides(tmp_path):
    _write(tmp_path / "base.py", """
        image_size = 64
        model = dict(type='TalkingHeadModel', warper=dict(type='GridSampleWarper', align_corners=True),
                     motion=dict(type='M', num_kp=10, block_expansion=8))
    """)
    _write(tmp_path / "variant.py", """
        _base_ = ['./base.py']
        model = dict(motion=dict(num_kp=15))
    """)
    cfg = load_recipe(tmp_path / "variant.py")
    assert cfg.model.motion.num_kp == 15
    assert cfg.model.motion.block_expansion == 8  # deep-merged from the base
    assert cfg.model.warper.align_corners is True
    cfg = load_recipe(tmp_path / "variant.py", {"model.motion.num_kp": 5, "image_size": 128})
    assert cfg.model.motion.num_kp == 5 and cfg.image_size == 128


def test_delete_replaces_subtree(tmp_path):
    _write(tmp_path / "base.py", "model = dict(type='TalkingHeadModel', compensator=dict(type='X', a=1))\n")
    _write(tmp_path / "v.py", """
        _base_ = ['./base.py']
        model = dict(compensator=dict(_delete_=True, type='Y'))
    """)
    assert load_recipe(tmp_path / "v.py").model.compensator.to_dict() == {"type": "Y"}


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="recipe file not found: nope/nothing.py"):
        load_recipe("nope/nothing.py")


def test_syntax_error_names_file_and_line(tmp_path):
    p = _write(tmp_path / "broken.py", "model = dict(type='X'\nimage_size = 64\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert "broken.py" in str(e.value) and "line" in str(e.value)


def test_runtime_error_in_recipe(tmp_path):
    p = _write(tmp_path / "bad.py", "model = dict(type='X', n=1 // 0)\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert "ZeroDivisionError" in str(e.value)


def test_recipe_without_model(tmp_path):
    p = _write(tmp_path / "empty.py", "image_size = 64\n")
    with pytest.raises(RecipeError, match="defines no 'model'"):
        load_recipe(p)


def test_recipes_are_organised_by_method():
    recipes = list_recipes()
    assert recipes, "no recipes found"
    for r in recipes:
        assert r.parent.parent.name == "recipes", f"{r} is not recipes/<method>/<variant>.py"


def test_size_sets_image_size_and_the_parts_follow_when_built():
    """``load_recipe(size=)`` sets only ``image_size``; the builder hands it to the parts that take it, so SMAC's
    retrieval transformers get the token grid of that size (8 x 8 at 64 px, 16 x 16 at the recipe's 128 px) and
    the model runs at 64 px.  An explicit value in the config still wins."""
    import torch

    from thkit.builder import build_model

    cfg = load_recipe("smac/small", size=64)
    assert cfg.image_size == 64 and "num_tokens" not in cfg.model.compensator.motion.transformer
    torch.manual_seed(0)
    model = build_from_recipe(cfg).eval()
    for part, dim in (("motion", 16), ("appearance", 64)):
        t = getattr(model.compensator, part).transformer
        assert t.num_tokens == 64 and tuple(t.position_emb.shape) == (64, dim)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out["prediction"].shape == (1, 3, 64, 64)
    # the recipe's own size, and image_size given as an option, work the same way
    assert build_from_recipe(load_recipe("smac/small")).compensator.motion.transformer.num_tokens == 256
    opt = load_recipe("smac/small", {"image_size": 64})
    assert build_model(opt.model.to_dict(), image_size=opt.image_size).compensator.motion.transformer.num_tokens == 64
    # explicit settings win: num_tokens over the image size, a part's own image_size over the recipe's
    both = load_recipe("smac/small", {"model.compensator.motion.transformer.num_tokens": 16,
                                      "model.compensator.appearance.image_size": 256}, size=64)
    model = build_from_recipe(both)
    assert model.compensator.motion.transformer.num_tokens == 16
    assert model.compensator.appearance.transformer.num_tokens == 1024


def test_perceptual_scales_follow_the_image_size():
    """The perceptual loss keeps the pyramid scales a ``image_size`` image can feed to the VGG slices it uses."""
    from thkit.builder import recipe_settings
    from thkit.losses.bundle import build_loss_bundle

    def scales(recipe, size):
        cfg = load_recipe(recipe, size=size)
        with recipe_settings(image_size=cfg.image_size):
            return build_loss_bundle(cfg.losses.to_dict())["perceptual"].scales

    assert scales("smac/vox256", 64) == [1.0, 0.5, 0.25]  # relu5_1 needs 16 px; 64 / 8 = 8
    assert scales("smac/vox256", None) == [1.0, 0.5, 0.25, 0.125]
    assert scales("smac/small", 64) == [1.0, 0.5, 0.25, 0.125]  # smac/small's loss stops at relu1_1


def test_a_size_the_parts_cannot_run_at_is_a_one_line_error_naming_the_setting():
    with pytest.raises(RecipeError) as e:
        build_from_recipe(load_recipe("smac/small", size=100))
    msg = str(e.value)
    assert msg.startswith("model.compensator.motion: ") and "\n" not in msg
    assert "image_size=100 px gives no whole token grid" in msg and "multiple of 8 px (e.g. 96 or 104)" in msg
    for bad in (0, -64, 1.5, True):
        with pytest.raises(RecipeError, match="^image_size: the image size must be a positive number of pixels"):
            load_recipe("fomm/small", size=bad)
    from thkit.builder import recipe_settings
    from thkit.losses.bundle import build_loss_bundle

    cfg = load_recipe("fomm/vox256", {"losses.perceptual.scales": [0.125]}, size=64)
    with pytest.raises(RecipeError) as e, recipe_settings(image_size=cfg.image_size):
        build_loss_bundle(cfg.losses.to_dict())
    msg = str(e.value)
    assert msg.startswith("losses.perceptual: PerceptualPyramidLoss: image_size=64 px") and "\n" not in msg
    assert "at least 121 px" in msg  # 121 / 8 rounds up to the 16 px relu5_1 needs

