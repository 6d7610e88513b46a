"""Adversarial losses: LSGAN with feature matching (FOMM ``vox-adv``, MCNet) and hinge with the VQGAN adaptive
weight (SMAC, after VQGAN / CodeFormer).

Both read what a discriminator returns: the dict of
:class:`~thkit.models.discriminator.MultiScaleDiscriminator` (``{'feature_maps': {scale: [maps]},
'prediction_map': {scale: (B, 1, h, w)}}``), a single-scale dict with tensors, or a bare prediction tensor
(a PatchGAN such as VQGAN's).  Scales are summed, as in the official code.

Namespace convention (what the training model provides, see :mod:`thkit.losses.bundle`): ``disc_fake`` is
D(prediction) with the gradient to the generator (generator step) or D(prediction.detach())
(discriminator step); ``disc_real`` is D(driving).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from thkit.losses._base import Loss
from thkit.registry import LOSSES

Tensor = torch.Tensor


def prediction_maps(out: Any) -> list[Tensor]:
    """The prediction map of every scale of a discriminator output (see the module docstring)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, Mapping) and "prediction_map" in out:
        pm = out["prediction_map"]
        if isinstance(pm, Tensor):
            return [pm]
        if isinstance(pm, Mapping):
            return list(pm.values())
    if isinstance(out, Sequence) and all(isinstance(t, Tensor) for t in out):
        return list(out)
    raise TypeError("a discriminator output must be a tensor, a list of tensors, or a dict with 'prediction_map' "
                    f"(a tensor or {{scale: tensor}}); got {type(out).__name__}")


def feature_maps(out: Any) -> dict[str, list[Tensor]]:
    """``{scale: [feature map per block]}`` of a discriminator output."""
    if not isinstance(out, Mapping) or "feature_maps" not in out:
        raise TypeError("feature matching needs discriminator outputs with 'feature_maps' (MultiScaleDiscriminator)")
    fm = out["feature_maps"]
    if isinstance(fm, Mapping):
        return {str(k): list(v) for k, v in fm.items()}
    return {"0": list(fm)}


def adaptive_gan_weight(rec_loss: Tensor, gan_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4,
                        eps: float = 1e-4) -> Tensor:
    """VQGAN's adaptive weight (Esser et al. 2021, sec. 3.2): ``||grad_L(rec)|| / (||grad_L(gan)|| + eps)``.

    ``L`` is the last layer's weight of the generator; the ratio is clamped to ``[0, max_weight]`` (VQGAN
    1e4; SMAC 1.0) and detached.  Both losses must depend on ``last_layer``; the graphs are retained.
    """
    if not isinstance(last_layer, Tensor) or not last_layer.requires_grad:
        raise ValueError("adaptive_gan_weight: last_layer must be the generator's last weight (a tensor that requires "
                         "grad)")
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    for name, g in (("reconstruction", g_rec), ("GAN", g_gan)):
        if g is None:
            raise ValueError(f"adaptive_gan_weight: the {name} loss does not depend on last_layer")
    weight = torch.norm(g_rec) / (torch.norm(g_gan) + eps)
    return torch.clamp(weight, 0.0, max_weight).detach()


def _inactive(iteration: int | None, start_iter: int) -> bool:
    return iteration is not None and int(iteration) < start_iter


@LOSSES.register_module()
class LSGANLoss(Loss):
    """Least-squares GAN (Mao et al. 2017) with discriminator feature matching (FOMM sec. 3.3 / vox-adv).

    Generator: ``{'gan': weight * sum_s mean (1 - D_s(fake))^2,
    'feature_matching': sum_s sum_i fm_i * mean |F_{s,i}(real) - F_{s,i}(fake)|}`` (real features detached,
    which does not change the generator's gradient).  Discriminator (:meth:`discriminator_loss`):
    ``{'gan': discriminator_weight * sum_s mean((1 - D_s(real))^2 + D_s(fake)^2)}``.

    Args:
        weight: FOMM ``generator_gan`` (vox-adv 1; vox 0 = off).
        discriminator_weight: FOMM ``discriminator_gan`` (1).
        feature_matching: per-block weights (vox-adv ``[10, 10, 10, 10]``; empty or all 0 = off); one per
            discriminator block.
        start_iter: both sides return 0 before this iteration (when the namespace has ``iteration``).
    """

    default_inputs = {"disc_fake": "disc_fake", "disc_real": "disc_real", "iteration": "iteration"}
    discriminator_inputs = {"disc_real": "disc_real", "disc_fake": "disc_fake", "iteration": "iteration"}

    def __init__(self, weight: float = 1.0, discriminator_weight: float = 1.0,
                 feature_matching: Sequence[float] = (10.0, 10.0, 10.0, 10.0), start_iter: int = 0):
        super().__init__(weight)
        self.discriminator_weight = float(discriminator_weight)
        self.feature_matching = [float(w) for w in feature_matching]
        self.start_iter = int(start_iter)

    def forward(self, disc_fake: Any, disc_real: Any = None, iteration: int | None = None) -> dict[str, Tensor]:
        preds = prediction_maps(disc_fake)
        zero = preds[0].new_zeros(())
        use_fm = any(w != 0 for w in self.feature_matching)
        if _inactive(iteration, self.start_iter):
            return {"gan": zero, **({"feature_matching": zero} if use_fm else {})}
        out = {"gan": self.weight * sum(((1 - p) ** 2).mean() for p in preds)}
        if use_fm:
            if disc_real is None:
                raise ValueError("LSGANLoss: feature matching needs disc_real (the discriminator's output on the "
                                 "driving frame)")
            real, fake = feature_maps(disc_real), feature_maps(disc_fake)
            if real.keys() != fake.keys():
                raise ValueError(f"LSGANLoss: scales differ between real {list(real)} and fake {list(fake)}")
            total = zero
            for scale in fake:
                if len(fake[scale]) != len(self.feature_matching):
                    raise ValueError(f"LSGANLoss: feature_matching has {len(self.feature_matching)} weights but the "
                                     f"discriminator returns {len(fake[scale])} feature maps at scale {scale}")
                for w, a, b in zip(self.feature_matching, real[scale], fake[scale]):
                    if w != 0:
                        total = total + w * (a.detach() - b).abs().mean()
            out["feature_matching"] = total
        return out

    def discriminator_loss(self, disc_real: Any, disc_fake: Any, iteration: int | None = None) -> dict[str, Tensor]:
        real, fake = prediction_maps(disc_real), prediction_maps(disc_fake)
        if len(real) != len(fake):
            raise ValueError(f"LSGANLoss: {len(real)} real vs {len(fake)} fake prediction maps")
        if _inactive(iteration, self.start_iter):
            return {"gan": real[0].new_zeros(())}
        value = sum(((1 - r) ** 2 + f**2).mean() for r, f in zip(real, fake))
        return {"gan": self.discriminator_weight * value}


@LOSSES.register_module()
class HingeGANLoss(Loss):
    """Hinge GAN (Lim & Ye 2017) as in VQGAN / SMAC, with VQGAN's adaptive generator weight.

    Generator: ``{'gan': weight * lambda * (-sum_s mean D_s(fake)), 'adaptive_weight': lambda}`` with
    ``lambda = adaptive_gan_weight(rec_loss, -mean D(fake), last_layer, max_adaptive_weight)`` when
    ``adaptive`` (else 1).  ``adaptive_weight`` is a logged statistic (detached), not a loss term.  Without
    autograd (evaluation) the adaptive weight is 0, as in VQGAN.
    Discriminator: ``{'real': mean relu(1 - D(real)), 'fake': mean relu(1 + D(fake))}`` (times
    ``disc_factor``; SMAC/BasicSR use 1, VQGAN's ``hinge_d_loss`` 0.5), summed over scales.

    Args:
        weight: SMAC ``scale_adaptive_gan_weight`` / VQGAN ``disc_weight`` (0.8).
        adaptive: use the adaptive weight (SMAC: yes).
        max_adaptive_weight: clamp of the ratio (VQGAN 1e4; SMAC's code 1.0).
        rec_terms: names of the bundle terms that form ``rec_loss`` (SMAC: pixel + perceptual of the output);
            a :class:`~thkit.losses.bundle.LossBundle` sums them and passes them as ``rec_loss``.
        disc_factor: factor of the discriminator side.
        start_iter: both sides return 0 before this iteration (SMAC: the discriminator starts after 5000).
    """

    default_inputs = {"disc_fake": "disc_fake", "rec_loss": "rec_loss", "last_layer": "last_layer",
                      "iteration": "iteration"}
    discriminator_inputs = {"disc_real": "disc_real", "disc_fake": "disc_fake", "iteration": "iteration"}
    stat_keys = ("adaptive_weight",)

    def __init__(self, weight: float = 0.8, adaptive: bool = True, max_adaptive_weight: float = 1e4,
                 rec_terms: Sequence[str] = ("pixel", "perceptual"), disc_factor: float = 1.0, start_iter: int = 0):
        super().__init__(weight)
        self.adaptive = bool(adaptive)
        self.max_adaptive_weight = float(max_adaptive_weight)
        self.rec_terms = tuple(rec_terms) if adaptive else ()
        self.disc_factor = float(disc_factor)
        self.start_iter = int(start_iter)

    def forward(self, disc_fake: Any, rec_loss: Tensor | None = None, last_layer: Tensor | None = None,
                iteration: int | None = None) -> dict[str, Tensor]:
        preds = prediction_maps(disc_fake)
        zero = preds[0].new_zeros(())
        if _inactive(iteration, self.start_iter):
            return {"gan": zero, "adaptive_weight": zero}
        g_loss = -sum(p.mean() for p in preds)
        if not self.adaptive:
            lam = torch.ones((), dtype=g_loss.dtype, device=g_loss.device)
        elif not (torch.is_grad_enabled() and g_loss.requires_grad):
            lam = zero  # evaluation: no gradients to compare (VQGAN uses 0 there)
        else:
            if rec_loss is None or last_layer is None:
                raise ValueError("HingeGANLoss(adaptive=True) needs rec_loss and last_layer (the generator's last "
                                 "weight); set adaptive=False to use the plain weight")
            lam = adaptive_gan_weight(rec_loss, g_loss, last_layer, self.max_adaptive_weight)
        return {"gan": self.weight * lam * g_loss, "adaptive_weight": lam.detach()}

    def discriminator_loss(self, disc_real: Any, disc_fake: Any, iteration: int | None = None) -> dict[str, Tensor]:
        real, fake = prediction_maps(disc_real), prediction_maps(disc_fake)
        if _inactive(iteration, self.start_iter):
            zero = real[0].new_zeros(())
            return {"real": zero, "fake": zero}
        return {"real": self.disc_factor * sum(torch.relu(1 - r).mean() for r in real),
                "fake": self.disc_factor * sum(torch.relu(1 + f).mean() for f in fake)}
