"""`thkit` CLI: build output, and the one-line errors users get (no traceback unless --debug)."""
import subprocess
import textwrap
from types import SimpleNamespace

import pytest
from conftest import run_cli

from thkit.cli import main


def run_main(capsys, *args):
    """Run the CLI in this process (much faster than a subprocess); same fields as CompletedProcess."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse --help / usage errors
        code = e.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


@pytest.fixture(scope="module")
def small_build():
    # one real subprocess: the installed entry point end to end
    return run_cli("build", "fomm/small", "--size", "64", "--batch", "2")


def test_help_documents_every_command(capsys):
    r = run_main(capsys, "--help")
    assert r.returncode == 0
    from thkit.cli import make_parser

    sub_actions = [a for a in make_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    commands = list(sub_actions[0].choices)
    assert {"build", "list", "plugins", "convert"} <= set(commands)
    documented = {a.dest for a in sub_actions[0]._choices_actions if a.help}
    for cmd in commands:
        assert cmd in r.stdout and cmd in documented, cmd
        sub = run_main(capsys, cmd, "--help")
        assert sub.returncode == 0 and "usage: thkit " + cmd in sub.stdout


def test_console_script_is_installed():
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "thkit"  # the console script beside this interpreter
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "usage: thkit" in r.stdout


def test_build_prints_tree_shapes_and_time(small_build):
    r = small_build
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    for part in ("model.keypoint_detector", "FOMMKeypointDetector", "model.motion", "FirstOrderMotion",
                 "model.encoder", "model.decoder", "model.warper", "GridSampleWarper", "built-in"):
        assert part in out, part
    assert "prediction: 2x3x64x64" in out
    assert "forward pass on random 2x3x64x64 input" in out and " ms" in out


def test_build_param_counts_match_model(small_build):
    import torch  # noqa: F401

    from thkit.builder import build_model
    from thkit.recipe import load_recipe

    model = build_model(load_recipe("fomm/small").model.to_dict())
    total = sum(p.numel() for p in model.parameters())
    assert f"model parameters: {total:,}" in small_build.stdout


def _err_ok(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_unknown_type_lists_closest_names(capsys):
    r = run_main(capsys, "build", "fomm/small", "--cfg-options", "model.motion.type=FirstOrderMotoin")
    _err_ok(r, "model.motion.type", "unknown motion 'FirstOrderMotoin'", "'FirstOrderMotion'")


def test_unknown_argument_names_path(capsys):
    r = run_main(capsys, "build", "fomm/small", "--cfg-options", "model.motion.num_kpp=5")
    _err_ok(r, "model.motion.num_kpp", "num_kp")


def test_missing_argument_names_path(tmp_path, capsys):
    p = tmp_path / "nodecoder.py"
    p.write_text(textwrap.dedent("""
        image_size = 64
        model = dict(type='TalkingHeadModel', keypoint_detector=dict(type='FOMMKeypointDetector', num_blocks=3),
                     motion=dict(type='FirstOrderMotion', num_blocks=3), encoder=dict(type='FOMMEncoder'))
    """))
    _err_ok(run_main(capsys, "build", str(p)), "model.decoder: missing required argument")


def test_missing_and_unparsable_recipe(tmp_path, capsys):
    _err_ok(run_main(capsys, "build", str(tmp_path / "nope.py")), "recipe file not found")
    p = tmp_path / "bad.py"
    p.write_text("model = dict(type='TalkingHeadModel'\n")
    _err_ok(run_main(capsys, "build", str(p)), "bad.py", "line 1")


def test_debug_shows_traceback():
    from thkit.errors import RecipeError

    with pytest.raises(RecipeError, match="model.motion.type"):
        main(["--debug", "build", "fomm/small", "--cfg-options", "model.motion.type=Nope"])


def test_interface_violation_is_named(monkeypatch, capsys):
    from thkit.cli import main
    from thkit.decode.fomm import FOMMDecoder
    from thkit.registry import DECODERS

    @DECODERS.register_module(force=True)
    class _NoPredictionDecoder(FOMMDecoder):
        def forward(self, features, ctx):
            return {"image": super().forward(features, ctx)["prediction"]}

    try:
        code = main(["build", "fomm/small", "--size", "64", "--cfg-options", "model.decoder.type=_NoPredictionDecoder"])
    finally:
        DECODERS._module_dict.pop("_NoPredictionDecoder")
    err = capsys.readouterr().err
    assert code == 2 and "decoder" in err and "lacks prediction" in err


def test_dump_round_trips(tmp_path, capsys):
    out = tmp_path / "resolved.py"
    r = run_main(capsys, "build", "fomm/small", "--size", "64", "--cfg-options", "model.motion.num_kp=5",
                "model.keypoint_detector.num_kp=5", "--dump", str(out))
    assert r.returncode == 0, r.stderr
    from thkit.recipe import load_recipe

    cfg = load_recipe(out)
    assert cfg.model.motion.num_kp == 5 and "_base_" not in cfg
    r2 = run_main(capsys, "build", str(out), "--size", "64")
    assert r2.returncode == 0, r2.stderr
