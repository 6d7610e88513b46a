"""Recipes: _base_ inheritance, overrides, and the errors users make."""
import textwrap

import pytest

from thkit.errors import RecipeError
from thkit.recipe import list_recipes, load_recipe


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
