"""Entry-point plugins: the example plugin is seen by `thkit list`/`build`; broken plugins are reported, not fatal."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """Install plugins/thkit-example-plugin into a folder, plus two broken plugins made here."""
    site = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(ROOT / "plugins" / "thkit-example-plugin")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    # a plugin whose import fails
    _fake_dist(site, "thkit-broken-import", "broken_import", "broken = thkit_broken_import:register",
               "import thkit_no_such_dependency\n\ndef register():\n    pass\n")
    # a plugin that registers a name the host already has (and one new name first, which must be rolled back)
    _fake_dist(site, "thkit-name-clash", "name_clash", "clash = thkit_name_clash:register", textwrap.dedent("""
        def register():
            from thkit.registry import WARPERS
            from thkit.warp import GridSampleWarper

            @WARPERS.register_module()
            class ClashHelperWarper(GridSampleWarper):
                "registered before the clash; must be rolled back"

            @WARPERS.register_module(name="GridSampleWarper")
            class Impostor(GridSampleWarper):
                pass
    """))
    return site


def _fake_dist(site: Path, dist: str, mod: str, ep: str, code: str) -> None:
    pkg = f"thkit_{mod}"
    (site / f"{pkg}.py").write_text(code)
    info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[thkit.plugins]\n{ep}\n")


def _env(site, **extra):
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.update(extra)
    return env


def test_plugins_command_lists_status_and_registrations(plugin_site):
    r = run_cli("plugins", env=_env(plugin_site))
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "thkit-example-plugin" in out and "0.1.0" in out
    assert "warper:BicubicBorderWarper" in out
    assert "broken" in out and "ModuleNotFoundError" in out and "thkit_no_such_dependency" in out
    assert "clash" in out and "already registered" in out
    assert out.count("failed") == 2


def test_strict_turns_failures_into_errors(plugin_site):
    r = run_cli("plugins", "--strict", env=_env(plugin_site))
    assert r.returncode != 0
    assert "thkit-broken-import" in r.stderr and "thkit-name-clash" in r.stderr


def test_list_sees_plugin_part_with_origin(plugin_site):
    r = run_cli("list", "warper", env=_env(plugin_site))
    assert r.returncode == 0, r.stderr
    assert "BicubicBorderWarper" in r.stdout and "plugin example (thkit-example-plugin 0.1.0)" in r.stdout
    assert "ClashHelperWarper" not in r.stdout  # the failed plugin's registrations were rolled back
    assert "GridSampleWarper" in r.stdout


def test_build_uses_plugin_part(plugin_site):
    r = run_cli("build", "fomm/small", "--size", "64", "--cfg-options", "model.warper.type=BicubicBorderWarper",
                env=_env(plugin_site))
    assert r.returncode == 0, r.stderr + r.stdout
    out = " ".join(r.stdout.split())
    assert "BicubicBorderWarper" in out and "plugin example (thkit-example-plugin 0.1.0)" in out
    assert "prediction: 1x3x64x64" in out


def test_env_disables_plugins(plugin_site):
    r = run_cli("list", "warper", env=_env(plugin_site, THKIT_NO_PLUGINS="1"))
    assert r.returncode == 0 and "BicubicBorderWarper" not in r.stdout
    r = run_cli("list", "warper", env=_env(plugin_site, THKIT_DISABLE_PLUGINS="example"))
    assert "BicubicBorderWarper" not in r.stdout


def test_loader_isolates_failures_in_process(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    import importlib

    import thkit.plugins as P

    importlib.invalidate_caches()
    records = {r.name: r for r in P.load_plugins(reload=True)}
    try:
        assert records["example"].status == "loaded"
        assert records["broken"].status == "failed"
        assert records["clash"].status == "failed"
        from thkit.registry import WARPERS
        from thkit.warp import GridSampleWarper

        assert WARPERS.get("GridSampleWarper") is GridSampleWarper
        assert WARPERS.get("ClashHelperWarper") is None
        with pytest.raises(P.PluginError):
            P.load_plugins(strict=True)
    finally:
        monkeypatch.setenv("THKIT_NO_PLUGINS", "1")
        P.load_plugins(reload=True)  # unregister the example plugin again for other tests


def test_plugin_recipes_are_listed_and_build_with_the_plugins_part(plugin_site):
    """The example plugin's `thkit.recipes` entry point adds example/fomm_bicubic, which uses its warper."""
    r = run_cli("list", "--recipes", env=_env(plugin_site))
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "example/fomm_bicubic" in ln)
    assert "BicubicBorderWarper" in line and "plugin example (thkit-example-plugin)" in line
    assert "fomm/vox256" in r.stdout
    r = run_cli("build", "example/fomm_bicubic", env=_env(plugin_site))
    assert r.returncode == 0, r.stderr
    assert "BicubicBorderWarper" in r.stdout and "prediction: 1x3x64x64" in r.stdout
    # the plugin's compensator sits in the compensator slot, with its parameters, from the plugin
    row = next(ln for ln in r.stdout.splitlines() if "model.compensator" in ln)
    assert "ResidualRefineCompensator" in row and "plugin example" in row and " 18,496 " in row
    # without plugins the recipe is unknown, with a one-line error naming the closest recipes
    r = run_cli("build", "example/fomm_bicubic", env=_env(plugin_site, THKIT_NO_PLUGINS="1"))
    assert r.returncode == 2 and r.stderr.startswith("error: no recipe 'example/fomm_bicubic'"), r.stderr
