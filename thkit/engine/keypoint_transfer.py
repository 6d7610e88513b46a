"""Training a keypoint-transfer network on a frozen, trained generator (TPSMM's "animation via disentanglement"
stage, ``train_avd.py``; Zhao & Zhang, CVPR 2022, sec. 3.4).

:class:`KeypointTransferTrainer` (recipe ``trainer = dict(type='KeypointTransferTrainer', ...)``) builds the
recipe's ``model`` and loads its trained weights (``generator_weights``: a thkit checkpoint, a model folder or an
official checkpoint), freezes it, and trains only the network named by ``network`` (a top-level recipe entry).
One step::

    kp_s, kp_d = detect(source), detect(driving)                          (frozen, no gradient)
    kp_r = kp_d with x and y scaled per sample by factors in [1 - s, 1 + s]   (s = random_scale)
    kp_t = network(kp_s, kp_r)
    losses(kp_transferred=kp_t, kp_driving=kp_d, ...)                    (TPSMM: L1 on the keypoints)

The network must undo the driving frame's shape change while keeping its pose, so at inference it maps the
source's identity onto a driving pose (``thkit animate --mode avd``).  Validation animates each source with
``network(kp_source, kp_driving)`` and compares with the driving frame.  The frozen generator stays in eval mode
(the official stage leaves its keypoint detector in training mode, so its BatchNorm statistics drift while the
AVD network trains; thkit keeps the trained model as it is).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper, OptimWrapperDict

from thkit.builder import build, build_model, recipe_settings
from thkit.errors import RecipeError, ThkitError
from thkit.losses.bundle import build_loss_bundle
from thkit.registry import HOOKS, MODELS

Tensor = torch.Tensor


def random_keypoint_scale(kp: Mapping[str, Tensor], scale: float, generator: torch.Generator | None = None
                          ) -> dict[str, Tensor]:
    """``kp['value']`` with x and y multiplied by per-sample factors drawn uniformly in ``[1 - scale, 1 + scale]``
    (official ``train_avd.random_scale``); other entries dropped (a keypoint transfer takes values only)."""
    value = kp["value"]
    theta = torch.rand(value.shape[0], 2, generator=generator, device="cpu").to(value) * (2 * scale) + (1 - scale)
    return {"value": value * theta[:, None, :]}


@MODELS.register_module()
class KeypointTransferTrainer(BaseModel):
    """Train a keypoint-transfer network (the recipe entry ``network``) on a frozen, trained generator.

    Args:
        generator: the recipe's ``model`` config (``thkit train`` passes it).
        losses: the recipe's ``losses`` (e.g. ``rec_kp=dict(type='KeypointReconstructionLoss', weight=1)``); they read
            ``kp_transferred``, ``kp_driving``, ``kp_driving_scaled``, ``kp_source``, ``source``, ``driving``.
        network: the config of the network to train (``(kp_source, kp_driving) -> {'value'}``).
        network_kind: the registry it is built from (``'motion'``: keypoint-transfer networks are registered with
            the motion estimators).
        generator_weights: the trained generator's weights (thkit checkpoint, model folder or official file).  If
            that file also holds the network (an entry named ``network_name``), training starts from it.
        network_name: the network's name in checkpoints (the recipe entry's name, e.g. ``'avd_network'``).
        random_scale: half-width of the random keypoint scale (TPSMM 0.25).
        discriminator: ignored (``thkit train`` passes the recipe's).
    """

    def __init__(self, generator: dict, losses: dict, network: dict, network_kind: str = "motion",
                 generator_weights: str | None = None, network_name: str = "network", random_scale: float = 0.25,
                 discriminator: dict | None = None, data_preprocessor: dict | None = None,
                 image_size: int | None = None, checkpoint_format: str = "auto", trusted: bool = False,
                 init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type="BaseDataPreprocessor"), init_cfg=init_cfg)
        from thkit.checkpoint import load_state_dict_strict, read_state_dicts

        if network is None:
            raise RecipeError("trainer.network", "the keypoint-transfer stage needs the network to train (e.g. "
                              "network=avd_network)")
        if not generator_weights:
            raise RecipeError("trainer.generator_weights", "the keypoint-transfer stage trains on a trained model: "
                              "set trainer.generator_weights=PATH (a thkit checkpoint, a model folder or an official "
                              "checkpoint), e.g. --cfg-options trainer.generator_weights=work_dirs/.../weights.pth")
        with recipe_settings(image_size=image_size):
            self.generator = build_model(generator)
            self.network = build(network_kind, network, path=f"trainer.network ({network_name})")
        sds = read_state_dicts(generator_weights, checkpoint_format, trusted)
        if "model" not in sds:
            raise RecipeError("trainer.generator_weights", f"{generator_weights} has no 'model' weights (has: "
                              f"{', '.join(sds)})")
        load_state_dict_strict(self.generator, sds["model"], "model")
        if network_name in sds:
            load_state_dict_strict(self.network, sds[network_name], network_name)
        self.generator.requires_grad_(False)
        self.generator.eval()
        self.network_name = network_name
        self.random_scale = float(random_scale)
        self.losses = build_loss_bundle(losses)
        if self.losses is None:
            raise RecipeError("losses", "the keypoint-transfer stage needs a loss, e.g. "
                              "rec_kp=dict(type='KeypointReconstructionLoss', weight=1.0)")
        self.input_range = tuple(float(v) for v in getattr(self.generator, "input_range", (0.0, 1.0)))
        #: optional CPU ``torch.Generator`` for the random scales (``None``: the global RNG)
        self.rng: torch.Generator | None = None

    # the frozen generator never leaves eval mode
    def train(self, mode: bool = True) -> KeypointTransferTrainer:
        super().train(mode)
        self.generator.eval()
        return self

    @property
    def gen(self) -> torch.nn.Module:
        return self.generator

    disc = None

    @staticmethod
    def _images(data: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        if not isinstance(data, Mapping) or "source" not in data or "driving" not in data:
            raise ThkitError("a training batch needs 'source' and 'driving' images (B, C, H, W)")
        return data["source"], data["driving"]

    def train_step(self, data: Any, optim_wrapper: OptimWrapper | OptimWrapperDict) -> dict[str, Tensor]:
        wrap = optim_wrapper
        if isinstance(optim_wrapper, OptimWrapperDict):
            if "network" not in optim_wrapper:
                raise RecipeError("optim_wrapper", "the keypoint-transfer stage needs a 'network' optimiser "
                                  f"(optim_wrapper.network), got {', '.join(optim_wrapper.keys())}")
            wrap = optim_wrapper["network"]
        data = self.data_preprocessor(data, True)
        source, driving = self._images(data)
        with torch.no_grad():
            kp_source = self.generator.detect(source)
            kp_driving = self.generator.detect(driving)
            kp_scaled = random_keypoint_scale(kp_driving, self.random_scale, self.rng)
        with wrap.optim_context(self.network):
            kp_t = self.network(kp_source, kp_scaled)
            ns = dict(data, source=source, driving=driving, kp_source=kp_source, kp_driving=kp_driving,
                      kp_driving_scaled=kp_scaled, kp_transferred=kp_t, network=self.network)
            stats: dict[str, Any] = {}
            terms = self.losses(ns, stats)
        bad = [k for k, v in terms.items() if not bool(torch.isfinite(v.detach()).all())]
        if bad:
            from thkit.engine.trainer import NonFiniteLossError

            raise NonFiniteLossError(f"training stopped: the loss {bad[0]!r} is not finite; no weights were updated",
                                     term=bad[0])
        total = self.losses.total(terms)
        wrap.update_params(total)
        log = {k: v.detach() for k, v in terms.items()}
        log["loss"] = total.detach()
        return log

    @torch.no_grad()
    def transferred(self, source: Tensor, driving: Tensor) -> dict[str, Any]:
        """The generator's output for ``source`` animated with ``network(kp_source, kp_driving)``."""
        cache = self.generator.encode_source(source)
        kp = self.network(cache["kp_source"], self.generator.detect(driving))
        return self.generator.animate(cache, kp)

    def val_step(self, data: Any) -> list[dict[str, Any]]:
        data = self.data_preprocessor(data, False)
        source, driving = self._images(data)
        lo, hi = self.input_range
        pred = self.transferred(source, driving)["prediction"].clamp(lo, hi).float().cpu()
        drv, src = driving.float().cpu(), source.float().cpu()
        return [{"prediction": pred[i], "driving": drv[i], "source": src[i]} for i in range(pred.shape[0])]

    def test_step(self, data: Any) -> list[dict[str, Any]]:
        return self.val_step(data)

    def forward(self, inputs: Any = None, data_samples: Any = None, mode: str = "tensor", **kwargs) -> Any:
        data = inputs if inputs is not None else kwargs
        if mode == "tensor":
            return self.transferred(*self._images(data))
        if mode == "predict":
            return self.val_step(data)
        raise ThkitError(f"KeypointTransferTrainer.forward: mode {mode!r} is not supported (training uses "
                         "train_step)")

    def network_state_dicts(self) -> dict[str, dict[str, Tensor]]:
        """``{'model': generator, network_name: network}``: a checkpoint ``thkit animate --mode`` reads."""
        return {"model": self.generator.state_dict(), self.network_name: self.network.state_dict()}


@HOOKS.register_module()
class ExportKeypointTransferHook(Hook):
    """After training, write ``{'model': generator, <network_name>: network}`` as a thkit checkpoint
    (``work_dir/<filename>``): ``thkit animate --checkpoint FILE --mode MODE`` reads both."""

    priority = "LOWEST"

    def __init__(self, filename: str = "weights.pth"):
        self.filename = filename

    @master_only
    def after_train(self, runner) -> None:
        import os.path as osp

        from thkit.checkpoint import save_checkpoint
        from thkit.engine.trainer import unwrap

        trainer = unwrap(runner.model)
        meta = {"iteration": int(runner.iter), "experiment": str(runner.experiment_name)}
        if runner.cfg.get("image_size") is not None:
            meta["image_size"] = int(runner.cfg.get("image_size"))
        path = save_checkpoint(osp.join(runner.work_dir, self.filename), trainer.network_state_dicts(), meta)
        runner.logger.info(f"model and {trainer.network_name} weights written to {path}")


__all__ = ["ExportKeypointTransferHook", "KeypointTransferTrainer", "random_keypoint_scale"]
