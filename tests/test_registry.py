"""Registries, the builder's errors, and interface checks."""
import pytest
import torch
from torch import nn

from thkit.builder import build, build_model
from thkit.errors import InterfaceError, RecipeError, closest
from thkit.interfaces import Warper, check_output
from thkit.registry import KINDS, WARPERS, import_builtins


def test_every_kind_has_scope_thkit_and_interface():
    import_builtins()
    for name, kind in KINDS.items():
        assert kind.registry.scope == "thkit", name
        assert isinstance(kind.interface_class(), type)


def test_models_registry_is_child_of_mmengine_root():
    from mmengine.registry import MODELS as MM
    from mmengine.registry import DefaultScope

    import_builtins()
    assert MM.get("thkit.TalkingHeadModel") is not None  # found through the scope, as the Runner does
    with DefaultScope.overwrite_default_scope("thkit"):
        with MM.switch_scope_and_registry("thkit") as reg:  # what build_from_cfg does under the Runner
            assert reg.get("TalkingHeadModel") is not None


def test_unknown_type_lists_closest_names():
    with pytest.raises(RecipeError) as e:
        build("warper", dict(type="GridSampelWarper"), path="model.warper")
    msg = str(e.value)
    assert msg.startswith("model.warper.type:")
    assert "'GridSampleWarper'" in msg and "did you mean" in msg


def test_unknown_argument_names_recipe_path():
    with pytest.raises(RecipeError) as e:
        build("warper", dict(type="GridSampleWarper", align_corner=True), path="model.warper")
    assert "model.warper.align_corner" in str(e.value)
    assert "align_corners" in str(e.value)


def test_missing_argument_names_recipe_path():
    @WARPERS.register_module(force=True)
    class _NeedsArgWarper(Warper):
        def __init__(self, strength: float):
            super().__init__()
            self.align_corners = True

        def forward(self, feature, deformation, occlusion=None):
            return feature * self.strength

        def warp_image(self, image, deformation):
            return image

    try:
        with pytest.raises(RecipeError) as e:
            build("warper", dict(type="_NeedsArgWarper"), path="model.warper")
        assert str(e.value).startswith("model.warper.strength: missing required argument")
    finally:
        WARPERS._module_dict.pop("_NeedsArgWarper")


def test_part_missing_interface_method_is_reported():
    @WARPERS.register_module(force=True)
    class _NoWarpImage(nn.Module):
        align_corners = True

        def forward(self, feature, deformation, occlusion=None):
            return feature

    try:
        with pytest.raises(InterfaceError) as e:
            build("warper", dict(type="_NoWarpImage"), path="model.warper")
        assert "warp_image" in str(e.value) and "model.warper" in str(e.value)
    finally:
        WARPERS._module_dict.pop("_NoWarpImage")


def test_output_contract_names_missing_keys():
    with pytest.raises(InterfaceError) as e:
        check_output("motion", {"deformation": torch.zeros(1)}, "model.motion")
    assert "occlusion_map" in str(e.value)


def test_nested_paths_in_model_errors():
    cfg = dict(type="TalkingHeadModel", keypoint_detector=dict(type="NoSuchDetector"),
               motion={}, encoder={}, decoder={})
    with pytest.raises(RecipeError) as e:
        build_model(cfg)
    assert str(e.value).startswith("model.keypoint_detector.type: unknown keypoint")


def test_closest():
    assert closest("warper", ["GridSampleWarper", "FOMMDecoder"])[0] == "GridSampleWarper"


def test_dot_in_name_is_refused_by_mmengine_lookup():
    # mmengine reads '.' as a scope separator: document why names must not contain it
    @WARPERS.register_module(name="bad.name", force=True)
    class _Dotted(Warper):
        pass

    try:
        assert WARPERS.get("bad.name") is None
    finally:
        WARPERS._module_dict.pop("bad.name")
