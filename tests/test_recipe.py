"""Recipes: _base_ inheritance, overrides, and the errors users make."""
import textwrap

import pytest

from thkit.errors import RecipeError
from thkit.recipe import list_recipes, load_recipe, size_options


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


def test_size_options_run_a_recipe_at_another_size():
    """Overriding image_size alone leaves SMAC's token count (computed when the recipe was read) at 128 px;
    size_options scales it with the image, and drops the perceptual scales a small image cannot feed to VGG."""
    import torch

    from thkit.builder import build_model

    cfg = load_recipe("smac/small")
    opts = size_options(cfg, 64)
    assert opts["image_size"] == 64
    assert opts["model.compensator.motion.transformer.num_tokens"] == 64  # 8 x 8 tokens at 64 px (16 x 16 at 128)
    assert opts["model.compensator.appearance.transformer.num_tokens"] == 64
    assert "losses.perceptual.scales" not in opts  # smac/small's loss stops at relu1_1: every scale fits
    small = load_recipe("smac/small", opts)
    torch.manual_seed(0)
    model = build_model(small.model.to_dict()).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out["prediction"].shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="num_tokens=256"):  # what size_options prevents
        build_model(load_recipe("smac/small", {"image_size": 64}).model.to_dict())(
            torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    vox = size_options(load_recipe("smac/vox256"), 64)
    assert vox["losses.perceptual.scales"] == [1.0, 0.5, 0.25]  # relu5_1 needs 16 px; 64 / 8 = 8
    assert vox["model.compensator.motion.transformer.num_tokens"] == 64
    assert size_options(load_recipe("fomm/small"), 96) == {"image_size": 96}
    # load_recipe(size=...) applies them first; explicit options still win
    both = load_recipe("smac/small", {"model.compensator.motion.transformer.num_tokens": 16}, size=64)
    assert both.image_size == 64 and both.model.compensator.appearance.transformer.num_tokens == 64
    assert both.model.compensator.motion.transformer.num_tokens == 16


def test_size_options_errors_name_the_setting_and_the_sizes_that_work():
    with pytest.raises(RecipeError, match=r"num_tokens: 256 tokens at 128 px .* at 100 px \(use a multiple of 8 px\)"):
        size_options(load_recipe("smac/small"), 100)
    with pytest.raises(RecipeError, match="losses.perceptual.scales"):
        size_options(load_recipe("fomm/vox256", {"losses.perceptual.scales": [0.125]}), 64)
    with pytest.raises(RecipeError, match="positive"):
        size_options(load_recipe("fomm/small"), 0)
