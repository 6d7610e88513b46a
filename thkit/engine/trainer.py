"""The training model: a :class:`~thkit.models.talking_head.TalkingHeadModel`, its discriminator and the
recipe's losses, trained by self-supervised reconstruction (Siarohin et al. 2019, sec. 3 and 4): reconstruct a
driving frame from a source frame of the same video, with GAN training on two optimisers.

One :meth:`TalkingHeadTrainer.train_step`:

1. **Generator side** (optimiser ``generator``: keypoint detector, motion, encoder, compensator, decoder):
   ``out = G(source, driving)``; the discriminator (frozen for this step) sees the prediction and the
   driving frame, with the detached driving keypoints when it takes them
   (:func:`thkit.interfaces.discriminate`); the loss bundle computes every named, weighted term; their sum is
   back-propagated, gradients are clipped (``clip_grad`` of the optimiser wrapper) and the generator steps.
2. **Discriminator side** (optimiser ``discriminator``, when a loss has a discriminator side and the
   recipe has a discriminator): the discriminator sees the detached prediction and the driving frame, the
   bundle's discriminator terms are summed, back-propagated and the discriminator steps.

Every term is logged on its own (``perceptual``, ``equivariance_value``, ..., discriminator terms prefixed
``d_``; totals ``loss_g`` / ``loss_d``).  A non-finite loss or gradient stops training with
:class:`NonFiniteLossError` naming the term, before any weight is touched, so the last checkpoint on disk is
the last good state.  :meth:`TalkingHeadTrainer.val_step` reconstructs and returns per-frame samples for the
reconstruction metrics (:mod:`thkit.metrics`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

from thkit.builder import build, build_model, recipe_settings
from thkit.errors import RecipeError, ThkitError
from thkit.interfaces import discriminate, loss_inputs
from thkit.losses.bundle import build_loss_bundle
from thkit.registry import MODELS

Tensor = torch.Tensor


class NonFiniteLossError(ThkitError):
    """A loss term (or a gradient) became NaN or infinite; training stopped before updating the weights."""

    def __init__(self, message: str, term: str | None = None, iteration: int | None = None):
        self.term = term
        self.iteration = iteration
        self.last_checkpoint: str | None = None
        super().__init__(message)

    def with_checkpoint(self, path: str | None) -> NonFiniteLossError:
        """Name the last good checkpoint in the message."""
        self.last_checkpoint = path
        note = (f"; the last good checkpoint is {path} (resume with --resume {path}, e.g. with a lower learning rate)"
                if path else "; no checkpoint had been written yet")
        self.args = (str(self.args[0]) + note,)
        return self


def unwrap(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """The module inside a DDP / mmengine model wrapper (or the module itself)."""
    while module is not None and is_model_wrapper(module):
        module = module.module
    return module


def detach_kp(kp: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keypoints with every tensor detached (the discriminator's keypoint input)."""
    return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in kp.items()}


@MODELS.register_module()
class TalkingHeadTrainer(BaseModel):
    """Self-supervised reconstruction training of a talking-head generator with an optional GAN.

    Args:
        generator: the recipe's ``model`` (a ``TalkingHeadModel`` config) or a built generator.
        losses: the recipe's ``losses`` (named loss configs, see :mod:`thkit.losses.bundle`).
        discriminator: the recipe's ``discriminator``; built only when some loss has a discriminator side.
        data_preprocessor: mmengine data preprocessor (default: move the batch to the device).
        last_layer: dotted path (inside the generator) of the weight used by VQGAN's adaptive GAN weight
            (namespace key ``last_layer``); default: the decoder's last parameter with more than one dimension.
        check_finite: stop on a non-finite loss or gradient (:class:`NonFiniteLossError`).
        nonfinite: what a non-finite loss or gradient does: ``'stop'`` (default: the error above, the last good
            checkpoint kept) or ``'skip'`` (the batch is dropped with no weight update, as MCNet's
            official training loop does; logged as ``skipped_nonfinite``), stopping after ``max_skips``
            consecutive skipped batches.
        input_range: value range of the images (for validation clamping); default: the generator's.
        image_size: the recipe's ``image_size``, handed to every part of the generator, the losses and the
            discriminator that takes it (:func:`thkit.builder.build`); ``thkit train`` passes it.
    """

    def __init__(self, generator: dict | torch.nn.Module, losses: dict, discriminator: dict | None = None,
                 data_preprocessor: dict | None = None, last_layer: str | None = None, check_finite: bool = True,
                 nonfinite: str = "stop", max_skips: int = 10,
                 input_range: Sequence[float] | None = None, init_cfg: dict | None = None,
                 image_size: int | None = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type="BaseDataPreprocessor"), init_cfg=init_cfg)
        with recipe_settings(image_size=image_size):
            self.generator = build_model(generator)
            if losses is None or (isinstance(losses, Mapping) and not losses):
                raise RecipeError("losses", "training needs a 'losses' dict in the recipe (named, weighted losses)")
            self.losses = build_loss_bundle(losses)
            self.adversarial_terms = [n for n, t in self.losses.terms.items() if hasattr(t, "discriminator_loss")]
            self.discriminator = None
            if self.adversarial_terms:
                if discriminator is None:
                    names = ", ".join(self.adversarial_terms)
                    raise RecipeError("discriminator", f"losses {names} are adversarial but the recipe defines no "
                                      "discriminator")
                self.discriminator = build("discriminator", discriminator, path="discriminator")
        self.last_layer_path = last_layer
        self.check_finite = bool(check_finite)
        if nonfinite not in ("stop", "skip"):
            raise RecipeError("trainer.nonfinite", f"expected 'stop' or 'skip', got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.max_skips = int(max_skips)
        self._skips = 0  # consecutive skipped batches
        rng = input_range if input_range is not None else getattr(self.generator, "input_range", (0.0, 1.0))
        self.input_range = (float(rng[0]), float(rng[1]))
        self._step = 0

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def gen(self) -> torch.nn.Module:
        """The generator without a DDP wrapper (for its parts)."""
        return unwrap(self.generator)

    @property
    def disc(self) -> torch.nn.Module | None:
        return unwrap(self.discriminator)

    def last_layer(self, channels: int = 3) -> Tensor | None:
        """The weight used by the adaptive GAN weight (VQGAN's ``get_last_layer``): ``last_layer`` when given,
        else the decoder's last multi-dimensional weight producing ``channels`` (image) channels, else its last
        multi-dimensional weight."""
        gen = self.gen
        if self.last_layer_path:
            obj: Any = gen
            for part in self.last_layer_path.split("."):
                if not hasattr(obj, part):
                    raise RecipeError("trainer.last_layer", f"the generator has no {self.last_layer_path!r} "
                                      f"({part!r} not found)")
                obj = getattr(obj, part)
            return obj
        params = [p for p in gen.decoder.parameters() if p.dim() > 1 and p.requires_grad]
        to_image = [p for p in params if p.shape[0] == channels]
        return (to_image or params or [None])[-1]

    def _iteration(self) -> int:
        from mmengine.logging import MessageHub

        hub = MessageHub.get_current_instance()
        it = hub.get_info("iter")
        return int(it) if it is not None else self._step

    @staticmethod
    def _images(data: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        if not isinstance(data, Mapping) or "source" not in data or "driving" not in data:
            got = ", ".join(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
            raise ThkitError(f"a training batch needs 'source' and 'driving' images (B, C, H, W); got {got} (use "
                             "collate_fn=dict(type='default_collate') in the dataloader)")
        return data["source"], data["driving"]

    def namespace(self, data: Mapping[str, Any], out: Mapping[str, Any]) -> dict[str, Any]:
        """What the losses read (:mod:`thkit.losses.bundle`): the generator's outputs, the batch, the model's
        parts, what the generator and its parts offer through :meth:`~thkit.interfaces.Part.loss_inputs`
        (without replacing a key already there) and the iteration."""
        gen = self.gen
        ns: dict[str, Any] = {k: v for k, v in data.items()}
        ns.update(out)
        ns.update(source=data["source"], driving=data["driving"], iteration=self._iteration(), generator=gen,
                  keypoint_detector=gen.keypoint_detector, motion=gen.motion, encoder=gen.encoder,
                  decoder=gen.decoder, compensator=gen.compensator, warper=gen.warper)
        for part in (gen, *gen.children()):
            for key, value in loss_inputs(part).items():
                ns.setdefault(key, value)
        pred = out.get("prediction")
        ns["last_layer"] = self.last_layer(pred.shape[1] if isinstance(pred, Tensor) else 3)
        return ns

    def discriminator_active(self, iteration: int) -> bool:
        """Whether some adversarial term is past its ``start_iter``."""
        return any(iteration >= int(getattr(self.losses[n], "start_iter", 0) or 0) for n in self.adversarial_terms)

    def _check(self, values: Mapping[str, Tensor], side: str, iteration: int) -> None:
        if not self.check_finite:
            return
        bad = [k for k, v in values.items() if isinstance(v, Tensor) and not bool(torch.isfinite(v.detach()).all())]
        bad = _any_rank(bad)
        if bad:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            value = _fmt(values[bad[0]]) if bad[0] in values else "non-finite on another process"
            raise NonFiniteLossError(
                f"training stopped at iteration {iteration + 1}: the {side} loss {bad[0]!r} became {value} (all terms: "
                f"{shown}); no weights were updated at this iteration", term=bad[0], iteration=iteration)

    def _check_grads(self, module: torch.nn.Module, side: str, iteration: int) -> None:
        if not self.check_finite:
            return
        grads = [(n, p.grad) for n, p in unwrap(module).named_parameters() if p.grad is not None]
        if not grads:
            return
        norms = torch._foreach_norm([g for _, g in grads])
        total = torch.stack([n.float() for n in norms])
        if bool(torch.isfinite(total).all()):
            return
        first = next(n for (n, _), v in zip(grads, total) if not bool(torch.isfinite(v)))
        raise NonFiniteLossError(
            f"training stopped at iteration {iteration + 1}: the {side} gradient of {first!r} is not finite although "
            "every loss term was; no weights were updated at this iteration", term=f"grad:{first}",
            iteration=iteration)

    def _update(self, wrapper: OptimWrapper, loss: Tensor, module: torch.nn.Module, side: str, iteration: int) -> None:
        """``update_params`` with a gradient check between backward and step (skipped under a loss scaler,
        which handles overflowing fp16 gradients itself)."""
        wrapper.backward(loss)
        if wrapper.should_update():
            if not hasattr(wrapper, "loss_scaler"):
                self._check_grads(module, side, iteration)
            wrapper.step()
            wrapper.zero_grad()

    @staticmethod
    def _wrappers(optim_wrapper: OptimWrapper | OptimWrapperDict) -> tuple[OptimWrapper, OptimWrapper | None]:
        if isinstance(optim_wrapper, OptimWrapperDict):
            if "generator" not in optim_wrapper:
                raise RecipeError("optim_wrapper", "needs a 'generator' entry (and 'discriminator' for GAN training); "
                                  f"got {', '.join(optim_wrapper.keys())}")
            return optim_wrapper["generator"], (optim_wrapper["discriminator"] if "discriminator" in optim_wrapper
                                                else None)
        return optim_wrapper, None

    # --------------------------------------------------------------------------------------- train step
    def train_step(self, data: Any, optim_wrapper: OptimWrapper | OptimWrapperDict) -> dict[str, Tensor]:
        """One generator (and discriminator) update; with ``nonfinite='skip'`` a non-finite batch is dropped."""
        try:
            log = self._train_step(data, optim_wrapper)
        except NonFiniteLossError as e:
            if self.nonfinite != "skip":
                raise
            for wrapper in self._wrappers(optim_wrapper):
                if wrapper is not None:
                    wrapper.zero_grad()  # a gradient check may have fired after backward
            self._skips += 1
            if self._skips > self.max_skips:
                raise NonFiniteLossError(f"{e} ({self._skips} batches in a row were non-finite; trainer.max_skips="
                                         f"{self.max_skips})", term=e.term, iteration=e.iteration) from e
            return {"skipped_nonfinite": torch.tensor(1.0)}
        self._skips = 0
        if self.nonfinite == "skip":
            log["skipped_nonfinite"] = torch.tensor(0.0)
        return log

    def _train_step(self, data: Any, optim_wrapper: OptimWrapper | OptimWrapperDict) -> dict[str, Tensor]:
        g_wrap, d_wrap = self._wrappers(optim_wrapper)
        iteration = self._iteration()
        data = self.data_preprocessor(data, True)
        source, driving = self._images(data)
        disc = self.disc
        use_d = disc is not None
        if use_d and d_wrap is None:
            raise RecipeError("optim_wrapper", "the losses are adversarial: add a 'discriminator' optimiser "
                              "(optim_wrapper=dict(constructor='MultiOptimWrapperConstructor', generator=..., "
                              "discriminator=...))")
        log: dict[str, Tensor] = {}
        stats: dict[str, Any] = {}

        # -- generator side ------------------------------------------------------------------------------
        if use_d:
            disc.requires_grad_(False)
        with g_wrap.optim_context(self.generator):
            out = self.generator(source, driving)
            ns = self.namespace(data, out)
            if use_d:
                kp = detach_kp(out["kp_driving"])
                ns["disc_fake"] = discriminate(disc, out["prediction"], kp)
                with torch.no_grad():
                    ns["disc_real"] = discriminate(disc, driving, kp)
            g_terms = self.losses(ns, stats)
        self._check(g_terms, "generator", iteration)
        g_total = self.losses.total(g_terms)
        self._update(g_wrap, g_total, self.generator, "generator", iteration)
        log.update({k: v.detach() for k, v in g_terms.items()})
        log["loss_g"] = g_total.detach()

        # -- discriminator side --------------------------------------------------------------------------
        if use_d and self.discriminator_active(iteration):
            disc.requires_grad_(True)
            with d_wrap.optim_context(self.discriminator):
                kp = detach_kp(out["kp_driving"])
                ns_d = dict(ns)
                ns_d["disc_fake"] = discriminate(self.discriminator, out["prediction"].detach(), kp)
                ns_d["disc_real"] = discriminate(self.discriminator, driving, kp)
                d_terms = self.losses.discriminator(ns_d, stats)
            self._check(d_terms, "discriminator", iteration)
            d_total = self.losses.total(d_terms)
            if d_total.requires_grad:
                self._update(d_wrap, d_total, self.discriminator, "discriminator", iteration)
            log.update({f"d_{k}": v.detach() for k, v in d_terms.items()})
            log["loss_d"] = d_total.detach()
        for k, v in stats.items():
            if isinstance(v, Tensor) and v.numel() == 1:
                log[k] = v.detach().float()
            elif isinstance(v, (int, float)):
                log[k] = torch.tensor(float(v))
        self._step = iteration + 1
        return log

    # ----------------------------------------------------------------------------------- val / test step
    @torch.no_grad()
    def reconstruct(self, data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Generator output on a batch (eval mode is the caller's business); returns ``(data, out)``."""
        data = self.data_preprocessor(data, False)
        source, driving = self._images(data)
        return data, self.gen(source, driving)

    def val_step(self, data: Any) -> list[dict[str, Any]]:
        """Reconstruct the driving frames; one sample per frame for the metrics: ``prediction`` (clamped to
        ``input_range``), ``driving``, ``source`` and ``video``."""
        data, out = self.reconstruct(data)
        lo, hi = self.input_range
        pred = out["prediction"].clamp(lo, hi).float().cpu()
        drv, src = data["driving"].float().cpu(), data["source"].float().cpu()
        videos = data.get("video")
        samples = []
        for i in range(pred.shape[0]):
            s = {"prediction": pred[i], "driving": drv[i], "source": src[i]}
            if videos is not None:
                s["video"] = videos[i] if isinstance(videos, (list, tuple)) else str(videos)
            samples.append(s)
        return samples

    def test_step(self, data: Any) -> list[dict[str, Any]]:
        return self.val_step(data)

    def forward(self, inputs: Any = None, data_samples: Any = None, mode: str = "tensor", **kwargs) -> Any:
        """mmengine's entry point.  ``mode='tensor'``: the generator's output dict on ``inputs`` (a batch dict
        with ``source`` and ``driving``); ``'predict'``: :meth:`val_step` samples; ``'loss'`` is not used:
        training goes through :meth:`train_step` (two optimisers)."""
        data = inputs if inputs is not None else kwargs
        if mode == "tensor":
            source, driving = self._images(data)
            return self.gen(source, driving)
        if mode == "predict":
            return self.val_step(data)
        raise ThkitError(f"TalkingHeadTrainer.forward: mode {mode!r} is not supported (training uses train_step)")


def _fmt(v: Any) -> str:
    if isinstance(v, Tensor):
        v = v.detach().float()
        return f"{float(v):.4g}" if v.numel() == 1 else f"tensor{tuple(v.shape)}"
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4g}"
    return str(v)


def _any_rank(bad: list[str]) -> list[str]:
    """Make a non-finite verdict common to all processes (one NaN rank must stop every rank, or the others
    would wait forever in the next all-reduce)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bad
    flag = torch.tensor([1.0 if bad else 0.0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if float(flag) > 0 and not bad:
        return ["<another process>"]
    return bad


__all__ = ["NonFiniteLossError", "TalkingHeadTrainer", "detach_kp", "unwrap"]
