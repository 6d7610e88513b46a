"""Layers reused across component families (one place, as timm's ``timm.layers``)."""
from thkit.layers.antialias import AntiAliasInterpolation2d
from thkit.layers.blocks import (
    DownBlock2d,
    Hourglass,
    HourglassDecoder,
    HourglassEncoder,
    ResBlock2d,
    SameBlock2d,
    UpBlock2d,
    make_norm,
)
from thkit.layers.grid import kp2gaussian, make_coordinate_grid
from thkit.layers.spade import SPADE, SPADEResBlock

__all__ = [
    "AntiAliasInterpolation2d",
    "DownBlock2d",
    "Hourglass",
    "HourglassDecoder",
    "HourglassEncoder",
    "ResBlock2d",
    "SameBlock2d",
    "UpBlock2d",
    "make_norm",
    "kp2gaussian",
    "make_coordinate_grid",
    "SPADE",
    "SPADEResBlock",
]
