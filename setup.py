"""Packages of the thkit wheel: ``thkit*`` plus the repository's top-level ``recipes/`` folder shipped inside the
package as ``thkit.recipes`` (so ``create_model('fomm/vox256')`` works from a wheel).  Everything else about the
project is in pyproject.toml."""
import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "recipes"
recipe_packages = ["thkit.recipes"] + sorted(
    "thkit.recipes." + ".".join(p.relative_to(RECIPES).parts)
    for p in RECIPES.rglob("*") if p.is_dir() and p.name != "__pycache__")

# An editable install needs no mapping (thkit.recipe finds the checkout's recipes/ beside the package), and without
# one setuptools adds the checkout to sys.path instead of installing an import hook (and warning about it).
EDITABLE = "editable_wheel" in sys.argv
setup(
    packages=find_packages(include=["thkit", "thkit.*"]) + ([] if EDITABLE else recipe_packages),
    package_dir={} if EDITABLE else {"thkit.recipes": "recipes"},
    # thkit/assets/samples: the web app's example media (scripts/make-samples)
    package_data={} if EDITABLE else {"thkit": ["assets/samples/*"],
                                      **{pkg: ["*.md", "*.json"] for pkg in recipe_packages}},
)
