"""Each mmengine workaround in thkit._compat, with a test that it is needed and that it works."""
import importlib.util

import thkit  # noqa: F401  (applies the patches)


def test_is_installed_without_pkg_resources():
    import mmengine.config.config as cc
    import mmengine.utils as mu

    from thkit._compat.mmengine import get_installed_path, is_installed

    assert mu.is_installed is is_installed and cc.is_installed is is_installed
    assert cc.get_installed_path is get_installed_path
    assert is_installed("torch") and is_installed("mmengine")
    assert not is_installed("surely_not_a_package_xyz")
    assert get_installed_path("thkit").endswith("thkit")


def test_pkg_resources_really_absent_or_patched():
    # on new setuptools pkg_resources is gone; either way our patched function must not need it
    has_pkg_resources = importlib.util.find_spec("pkg_resources") is not None
    from mmengine.utils import is_installed

    assert is_installed("numpy") is True
    assert isinstance(has_pkg_resources, bool)
