"""Packages of the thkit wheel: ``thkit*`` plus the repository's top-level ``recipes/`` folder shipped inside the
package as ``thkit.recipes`` (so ``create_model('fomm/vox256')`` works from a wheel).  Everything else about the
project is in pyproject.toml."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "recipes"
recipe_packages = ["thkit.recipes"] + sorted(
    "thkit.recipes." + ".".join(p.relative_to(RECIPES).parts)
    for p in RECIPES.rglob("*") if p.is_dir() and p.name != "__pycache__")

setup(
    packages=find_packages(include=["thkit", "thkit.*"]) + recipe_packages,
    package_dir={"thkit.recipes": "recipes"},
    package_data={pkg: ["*.md", "*.json"] for pkg in recipe_packages},
)
