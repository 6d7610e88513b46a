"""A recipe's training losses as one object: :class:`LossBundle`.

A recipe lists named losses, each a registered loss with its weights::

    losses = dict(
        perceptual=dict(type='PerceptualPyramidLoss', layer_weights=[10] * 5, vgg_weights='vgg19-dcbb9e9d.pth'),
        equivariance=dict(type='EquivarianceLoss', value_weight=10, jacobian_weight=10),
        adversarial=dict(type='LSGANLoss', weight=1, feature_matching=[10, 10, 10, 10]),
        low_res=dict(type='LowResolutionLoss', weight=0.5, perceptual='@perceptual'),   # share a built loss
        flow=dict(type='FlowReconstructionLoss', weight=32, inputs=dict(flows='my_flows')),  # rename an input
    )
    bundle = build_loss_bundle(cfg.losses)

Each loss reads its inputs from a **namespace**, a dict the training step fills; ``bundle(namespace)``
returns ``{term name: weighted scalar}`` (a loss returning several terms gives ``<name>_<term>``, e.g.
``equivariance_value``, ``equivariance_jacobian``), each to be logged separately; :meth:`LossBundle.total`
sums them.  Statistics that are not loss terms (e.g. the adaptive GAN weight, codebook/commitment parts) go
to the optional ``stats`` dict.  :meth:`LossBundle.discriminator` does the same for the discriminator step.

Namespace keys used by the built-in losses (defaults; a recipe renames with ``inputs=dict(arg='key')``):

=============================  =========================================================================
``prediction``, ``driving``     generated frame and its target (same value range), ``source``
``kp_driving``, ``kp_source``   keypoint dicts; ``keypoint_detector``: the model's detector (equivariance)
``disc_fake``, ``disc_real``    discriminator outputs on the prediction and on the driving frame
``last_layer``                  the generator's last weight (adaptive GAN weight); ``iteration``: the step
``warped_encoder_maps``         TPSMM decoder output; with ``encoder`` and ``occlusion_map`` (warp loss)
``bg_param``, ``bg_predictor``  TPSMM background affine and predictor (background cycle loss)
``motion_vq``, ``appearance_vq``  per-scale VQ outputs (SMAC codebook loss)
``motion_reconstructions``      decoded residual flows; ``deformation_list``: the flows they start from
``prediction_lr``               SMAC's low-resolution decoding(s)
=============================  =========================================================================

Besides the generator's outputs and the batch, the namespace holds what the generator's parts offer through
:meth:`thkit.interfaces.Part.loss_inputs` (e.g. TPSMM's motion part gives its ``bg_predictor``).

An entry with ``weight=0`` (or ``None``) is not built at all (no VGG is loaded for a disabled perceptual loss).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from thkit.builder import build, current_path
from thkit.errors import RecipeError
from thkit.interfaces import LossModule
from thkit.registry import LOSSES

Tensor = torch.Tensor

_BUNDLE_KEYS = ("inputs",)


def _forward_params(fn) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn).parameters
    return {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _resolve_refs(cfg: Any, built: Mapping[str, nn.Module], path: str) -> Any:
    """Replace ``'@name'`` strings (anywhere in a config) with the bundle's already built loss ``name``."""
    if isinstance(cfg, str) and cfg.startswith("@"):
        ref = cfg[1:]
        if ref not in built:
            raise RecipeError(path, f"'@{ref}' refers to no loss built before this one "
                                    f"(built: {', '.join(built) or 'none'})")
        return built[ref]
    if isinstance(cfg, Mapping):
        return {k: _resolve_refs(v, built, f"{path}.{k}") for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_resolve_refs(v, built, f"{path}[{i}]") for i, v in enumerate(cfg))
    return cfg


@LOSSES.register_module()
class LossBundle(LossModule):
    """Named, weighted training losses built from a recipe (see the module docstring).

    ``LossBundle(**terms)``: each keyword is a loss name and its config (``dict(type=..., ...)``, optionally
    ``inputs=dict(arg='namespace key')``), an already built loss module, or ``None`` (skipped).
    """

    def __init__(self, **terms: Any):
        super().__init__()
        self.terms = nn.ModuleDict()
        self.inputs: dict[str, dict[str, str]] = {}
        self.disabled: list[str] = []
        base = current_path()
        for name, cfg in terms.items():
            path = f"{base}.{name}" if base else name
            if cfg is None:
                self.disabled.append(name)
                continue
            if not name.isidentifier():
                raise RecipeError(path, "a loss name must be a Python identifier (no '.', '-' or spaces)")
            overrides: dict[str, str] = {}
            if isinstance(cfg, Mapping):
                cfg = dict(cfg)
                overrides = dict(cfg.pop("inputs", None) or {})
                if "weight" in cfg and not isinstance(cfg["weight"], (list, tuple)) and float(cfg["weight"]) == 0:
                    self.disabled.append(name)
                    continue
                cfg = _resolve_refs(cfg, self.terms, path)
                loss = build("loss", cfg, name)
            elif isinstance(cfg, nn.Module):
                loss = cfg
            else:
                raise RecipeError(path, f"expected a loss config dict, a loss module or None, got {type(cfg).__name__}")
            accepted = _forward_params(loss.forward)
            for arg in overrides:
                if arg not in accepted:
                    raise RecipeError(f"{path}.inputs.{arg}", f"{type(loss).__name__}.forward has no argument {arg!r} "
                                      f"(arguments: {', '.join(accepted)})")
            self.terms[name] = loss
            mapping = dict(getattr(loss, "default_inputs", {}))
            mapping.update(overrides)
            self.inputs[name] = mapping

    def __getitem__(self, name: str) -> nn.Module:
        return self.terms[name]

    def __contains__(self, name: object) -> bool:
        return name in self.terms

    def names(self) -> list[str]:
        return list(self.terms)

    # ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _gather(name: str, loss: nn.Module, fn, mapping: Mapping[str, str], namespace: Mapping[str, Any]) -> dict:
        kwargs = {}
        for arg, param in _forward_params(fn).items():
            key = mapping.get(arg, arg)
            if key in namespace and namespace[key] is not None:
                kwargs[arg] = namespace[key]
            elif param.default is inspect.Parameter.empty:
                raise KeyError(
                    f"loss {name!r} ({type(loss).__name__}) needs {arg!r} from the namespace key {key!r}, which the "
                    f"training step did not provide (keys: {', '.join(sorted(map(str, namespace)))}); map it to "
                    f"another key with inputs=dict({arg}='<key>') in the recipe")
        return kwargs

    @staticmethod
    def _collect(name: str, loss: nn.Module, out: Any, values: dict[str, Tensor], stats: dict | None) -> None:
        if isinstance(out, Tensor):
            values[name] = out
            return
        if not isinstance(out, Mapping):
            raise TypeError(f"loss {name!r} returned {type(out).__name__}; a loss returns a tensor or a dict of "
                            "tensors")
        stat_keys = getattr(loss, "stat_keys", ())
        for key, value in out.items():
            full = f"{name}_{key}"
            if key in stat_keys:
                if stats is not None:
                    stats[full] = value.detach() if isinstance(value, Tensor) else value
            else:
                values[full] = value

    @staticmethod
    def _terms_sum(name: str, wanted: tuple[str, ...], values: Mapping[str, Tensor]) -> Tensor:
        parts = []
        for t in wanted:
            found = [v for k, v in values.items() if k == t or k.startswith(t + "_")]
            if not found:
                raise KeyError(f"loss {name!r} needs the term {t!r} (rec_terms) computed before it; computed so far: "
                               f"{', '.join(values) or 'nothing'} (list it earlier in the recipe)")
            parts += found
        return sum(parts)

    def forward(self, namespace: Mapping[str, Any], stats: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Generator-side losses: ``{term: weighted scalar}`` in recipe order (statistics go to ``stats``)."""
        values: dict[str, Tensor] = {}
        for name, loss in self.terms.items():
            kwargs = self._gather(name, loss, loss.forward, self.inputs[name], namespace)
            rec_terms = tuple(getattr(loss, "rec_terms", ()) or ())
            if rec_terms:
                kwargs["rec_loss"] = self._terms_sum(name, rec_terms, values)
            self._collect(name, loss, loss(**kwargs), values, stats)
        return values

    def discriminator(self, namespace: Mapping[str, Any], stats: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Discriminator-side losses of the terms that have one (``disc_fake`` computed from a detached
        prediction): ``{'<name>_<term>': scalar}``."""
        values: dict[str, Tensor] = {}
        for name, loss in self.terms.items():
            fn = getattr(loss, "discriminator_loss", None)
            if fn is None:
                continue
            mapping = dict(getattr(loss, "discriminator_inputs", {}))
            mapping.update({k: v for k, v in self.inputs[name].items() if k in _forward_params(fn)})
            self._collect(name, loss, fn(**self._gather(name, loss, fn, mapping, namespace)), values, stats)
        return values

    @staticmethod
    def total(values: Mapping[str, Tensor]) -> Tensor:
        """Sum of the terms (what to call ``backward`` on)."""
        if not values:
            raise ValueError("no loss terms to sum")
        return sum(values.values())


def build_loss_bundle(cfg: Mapping[str, Any] | LossBundle | None) -> LossBundle | None:
    """Build a recipe's ``losses`` (a mapping of named loss configs, or ``dict(type='LossBundle', ...)``)
    with recipe paths starting at ``losses``."""
    if cfg is None or isinstance(cfg, LossBundle):
        return cfg
    if not isinstance(cfg, Mapping):
        raise RecipeError("losses", f"expected a dict of named loss configs, got {type(cfg).__name__}")
    cfg = dict(cfg)
    cfg.setdefault("type", "LossBundle")
    return build("loss", cfg, path="losses")
