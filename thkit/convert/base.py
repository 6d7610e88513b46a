"""The converter interface: one registered class per method that published official checkpoints.

A converter answers three questions, so that no generic module needs to know any method's layout:

* :meth:`Converter.detect` -- does this loaded file look like one of mine?  A score in ``[0, 1]`` (1: every key
  has a rule) and a reason; auto-detection asks every registered converter, plugins' included;
* :meth:`Converter.convert` -- the official file(s) as thkit state dicts ``{module: state_dict}`` (``'model'``
  for the generator, ``'discriminator'``, ...);
* :meth:`Converter.recipe_from_official` -- the official configuration (the official yaml's dict) as a thkit
  recipe with the same widths, so a checkpoint converts into a model folder that builds without a hand-written
  recipe.

Register one with ``@CONVERTERS.register_module(name='mymethod')`` (the name is what ``thkit convert --from``
takes).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from thkit.errors import CheckpointError

Tensor = torch.Tensor
StateDicts = dict[str, dict[str, Tensor]]


class Converter:
    """Official checkpoints of one method -> thkit state dicts, and the official config -> a thkit recipe.

    Subclasses set :attr:`method` (the registered name), :attr:`paper` and :attr:`files` (what the official
    files are, for messages), and implement :meth:`detect`, :meth:`convert` and :meth:`recipe_from_official`.
    A method whose weights come in several files (SMAC: generator and motion estimator) overrides
    :meth:`combine`.
    """

    #: what :func:`thkit.interfaces.check_part` verifies for the ``converter`` kind
    contract_attrs = ("detect", "convert", "recipe_from_official", "combine")
    contract_outputs: tuple[str, ...] = ()

    method: str = ""
    paper: str = ""
    files: str = "one official checkpoint file"
    #: the score from which :meth:`detect` counts as a fit
    FIT = 0.999

    def detect(self, checkpoint: Any) -> tuple[float, str]:
        """``(score, reason)``: 0 = not this method's file, 1 = every key has a rule of this converter."""
        raise NotImplementedError

    def combine(self, files: Sequence[Any], **options: Any) -> Any:
        """Merge the loaded official file(s) into what :meth:`convert` takes (default: exactly one file)."""
        if options:
            raise CheckpointError(f"the {self.method} converter takes no option {', '.join(options)}")
        if len(files) != 1:
            raise CheckpointError(f"the {self.method} converter takes {self.files}, got {len(files)} files")
        return files[0]

    def convert(self, checkpoint: Any) -> StateDicts:
        """The official weights as ``{module: thkit state dict}``; raises CheckpointError naming bad keys."""
        raise NotImplementedError

    def recipe_from_official(self, official_config: Mapping[str, Any], patches: Mapping[str, Any] | None = None,
                             **options: Any) -> dict[str, Any]:
        """A thkit recipe (plain data: ``model``, ``discriminator``, ``image_size``, ...) with the widths of
        ``official_config`` (the official yaml's dict); ``patches`` are the parity fixtures'
        ``meta.fixture_patches`` (widths the official code hard-codes, patched for tiny fixtures); ``options``
        are what a method's yaml cannot tell (FOMM: ``image_size``, ``align_corners``)."""
        raise NotImplementedError(f"the {self.method} converter cannot map an official configuration yet")

    def checkpoint_settings(self, checkpoint: Any) -> dict[str, Any]:
        """The recipe settings an official checkpoint fixes, ``{recipe path: value}`` (e.g.
        ``{'model.keypoint_detector.num_kp': 15}``), so that a checkpoint that does not fit a recipe is reported
        with the ``--cfg-options`` that make it fit.  Default: none known."""
        return {}

    def checkpoint_recipe(self, checkpoint: Any) -> str | None:
        """The built-in recipe whose networks an official checkpoint holds, for a method whose variants are
        different recipes (MRFA's prior models), so that a checkpoint whose :meth:`checkpoint_settings` differ
        from a recipe's is reported with the recipe to use instead of ``--cfg-options``.  Default: None."""
        return None

    def __call__(self, checkpoint: Any) -> StateDicts:
        return self.convert(checkpoint)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r})"
