"""The MoTE temporal module (spec sections 2-5): the model that runs any registered architecture,
no I/O. Settings are in ``temporal_config.py``, the layers in ``temporal_layers.py``, what each
architecture builds and supports in ``architectures/``, random draws in ``routing.py``, the fused
training losses in ``fused.py``.

Shapes: B batch (views), T frames, D embedding width, L layers, N experts per layer, C classes.
Parameter names mirror the reference checkpoint (spec 14), so importing one is a plain copy:

    frame_position_embeddings.weight                     [77, D]
    transformer.resblocks.{l}.attn.in_proj_weight/_bias  [3D, D] / [3D]
    transformer.resblocks.{l}.attn.out_proj.weight/.bias [D, D] / [D]
    transformer.resblocks.{l}.ln_1.* / ln_2.*            [D]
    transformer.resblocks.{l}.mlp.fc_up.{i}.weight/.bias [4D, D] / [4D]   expert i (0-based)
    transformer.resblocks.{l}.mlp.fc_dn.{i}.weight/.bias [D, 4D] / [D]
    transformer.resblocks.{l}.mlp.mote_fusion_weight     [N] frozen zeros (buffer)
    logit_scale []  and  finetune_text [C_ft, D] (buffer; the reference's spe_cls_feature)

Expert i in code is expert i+1 in the spec's 1-based formulas (routing softmax([1..N]), WMR i/tau).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.architectures import Architecture, get_architecture
from mote.pipeline.temporal.routing import sample_experts, sample_temperatures, wmr_coefficients
from mote.pipeline.temporal.temporal_config import MoTEConfig
from mote.pipeline.temporal.temporal_layers import ExpertChoice

MODES = ("auto", "routed", "wmr", "merged", "expert")


def tfm_rho_from_similarity(m: Tensor | float, gamma: float) -> Tensor:
    """Spec 5 step 5: rho = exp(-(1 - m) / gamma); 1 at m = 1, -> 0 as m falls."""
    return torch.exp(-(1.0 - torch.as_tensor(m, dtype=torch.float32)) / gamma)


class MoTE(nn.Module):
    """Temporal module + cosine head + TFM + the training losses of spec 4.4."""

    def __init__(self, cfg: MoTEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        for name, part in self.architecture.build(cfg).items():
            self.add_module(name, part)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self.register_buffer("finetune_text", torch.zeros(0, cfg.dim))
        self.architecture.init_weights(self)

    # -- construction --------------------------------------------------------------------------

    @property
    def architecture(self) -> Architecture:
        """What ``cfg.arch`` builds and supports (``architectures/``)."""
        return get_architecture(self.cfg.arch)

    def set_finetune_text(self, text: Tensor) -> None:
        """Store the fine-tuning class bank Y_ft (C_ft, D) that TFM needs, as unit rows."""
        if text.ndim != 2 or text.shape[1] != self.cfg.dim:
            raise ConfigError(
                f"fine-tune text bank has shape {tuple(text.shape)}; expected (classes, "
                f"{self.cfg.dim}) for this model"
            )
        device = self.logit_scale.device
        self.finetune_text = F.normalize(text.detach().float(), dim=-1).to(device)

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The text bank's row count comes from the file (400 for K400), so resize before copying.
        bank = state_dict.get(prefix + "finetune_text")
        if isinstance(bank, Tensor) and bank.ndim == 2:
            self.finetune_text = torch.zeros(
                bank.shape, dtype=torch.float32, device=self.finetune_text.device
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, e: Tensor, **kwargs: Any) -> Tensor:
        """Same as ``forward_features``."""
        return self.forward_features(e, **kwargs)

    def forward_features(
        self,
        e: Tensor,
        *,
        mode: str = "auto",
        experts: Sequence[int] | None = None,
        temperatures: Sequence[float] | None = None,
        rho: Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Frame outputs x = rho * s + e (spec 2.4) for raw CLIP frame features e (B, T, D).

        mode "routed": training routing (``experts`` forces one 0-based index per layer);
        "wmr": temperature-merged pass (``temperatures`` forces tau per layer, inf allowed);
        "merged": the cfg.inference rule ("ensemble" merges here too; ``predict`` ensembles);
        "expert": expert ``experts[l]`` in layer l, unmerged; "auto": routed when training,
        merged in eval. An architecture without a temporal module returns e; one without routed
        experts ignores the mode.
        """
        if mode not in MODES:
            raise ConfigError(f"forward mode {mode!r} is not one of {list(MODES)}")
        if self.architecture.pools_only:
            return e
        b, t, d = e.shape
        if t > self.cfg.context or d != self.cfg.dim:
            raise ConfigError(
                f"features of shape {tuple(e.shape)} do not fit this model (at most "
                f"{self.cfg.context} frames of width {self.cfg.dim})"
            )
        if mode == "auto":
            mode = "routed" if self.training else "merged"
        choices = self._layer_choices(mode, experts, temperatures, generator)
        u = e + self.frame_position_embeddings.weight[:t]  # (B, T, D) + (T, D): spec 2.3
        s = self.transformer(u, choices)  # (B, T, D), the full stream (still holds e + P)
        if rho is None:
            return s + e
        if isinstance(rho, Tensor) and rho.ndim > 0:
            rho = rho.to(s).reshape(b, 1, 1)  # per-view TFM rho, (B,) -> (B, 1, 1)
        return rho * s + e  # spec 2.4: outer residual with the RAW features e

    def _layer_choices(
        self,
        mode: str,
        experts: Sequence[int] | None,
        temperatures: Sequence[float] | None,
        generator: torch.Generator | None,
    ) -> list[ExpertChoice]:
        """What each layer's FFN runs for this pass."""
        cfg, layers = self.cfg, self.cfg.layers
        if not self.architecture.routes_experts:
            return [0] * layers
        if mode == "expert" or (mode == "routed" and experts is not None):
            return list(self._check_experts(experts))
        if mode == "routed":
            if cfg.routing == "all":
                return ["all"] * layers
            return list(sample_experts(cfg.routing, cfg.experts, layers, generator))
        if mode == "wmr":
            taus = temperatures
            if taus is None:
                taus = sample_temperatures(cfg.wmr_temperatures, cfg.wmr_beta, layers, generator)
            if len(taus) != layers:
                raise ConfigError(f"got {len(taus)} WMR temperatures for {layers} layers")
            return [wmr_coefficients(float(tau), cfg.experts) for tau in taus]
        if self.architecture.inference(cfg) == "random":  # Table 2c: uniform expert draws, no merge
            return list(sample_experts("uniform", cfg.experts, layers, generator))
        return [block.mlp.merge_coefficients() for block in self.transformer.resblocks]

    def _check_experts(self, experts: Sequence[int] | None) -> Sequence[int]:
        n, layers = self.cfg.experts, self.cfg.layers
        if experts is None or len(experts) != layers or not all(0 <= k < n for k in experts):
            raise ConfigError(
                f"experts={experts}: give one 0-based expert index below {n} per layer "
                f"({layers} layers)"
            )
        return [int(k) for k in experts]

    # -- head and TFM --------------------------------------------------------------------------

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        """(B, T, D) -> (B, D): mean over frames, no normalisation (spec 2.4)."""
        return x.mean(dim=1)

    @staticmethod
    def cosine_logits(z: Tensor, text: Tensor) -> Tensor:
        """(B, D), (C, D) -> (B, C) plain cosines; text rows are taken as already unit-norm."""
        return F.normalize(z, dim=-1) @ text.to(z).t()

    def tfm_rho(self, e: Tensor, text: Tensor) -> Tensor:
        """Spec 5: per-view rho (B,) from how close the test classes near a view are to the
        fine-tuning classes near it. K is capped at the smaller bank's size."""
        bank = self.finetune_text
        if bank.shape[0] == 0:
            raise ConfigError(
                "TFM needs the fine-tuning class text bank (K400 for the paper), which this "
                "model does not hold; load a run that stores finetune_text, or turn TFM off"
            )
        bank, text = bank.to(e), text.to(e)  # same device and dtype as the features
        q = F.normalize(e.mean(dim=1), dim=-1)  # (B, D), the spatial query
        k = min(self.cfg.tfm_k, text.shape[0], bank.shape[0])
        y_t = text[(q @ text.t()).topk(k, dim=-1).indices]  # (B, K, D) test proxies
        y_f = bank[(q @ bank.t()).topk(k, dim=-1).indices]  # (B, K, D) fine-tune proxies
        sim = y_t @ y_f.transpose(1, 2)  # (B, K, K)
        m = sim.max(dim=-1).values.mean(dim=-1)  # (B,): best fine-tune match, mean over K
        return tfm_rho_from_similarity(m.float(), self.cfg.tfm_gamma).to(e.dtype)

    def view_embeddings(
        self,
        e: Tensor,
        text: Tensor,
        tfm: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Evaluation vectors (B, D) and rho (B,): a view's vector dotted with a unit class text
        row is its cosine logit (``predict``). ``text`` is the test bank TFM's rho is computed
        against; the vectors are unit-norm, or under "ensemble" the mean of each expert's.

        Follows cfg.inference: "merge" one merged pass; "ensemble" the mean over experts;
        "random" a random expert per layer (``generator``). The meanpool arch has no stream to
        modulate, so its rho is all ones.
        """
        ones = torch.ones(e.shape[0], dtype=e.dtype, device=e.device)
        rho = self.tfm_rho(e, text) if tfm and self.architecture.uses_tfm else ones
        if self.architecture.inference(self.cfg) == "ensemble":
            vectors = [
                F.normalize(
                    self.pool(
                        self.forward_features(
                            e, mode="expert", experts=[i] * self.cfg.layers, rho=rho
                        )
                    ),
                    dim=-1,
                )
                for i in range(self.cfg.experts)
            ]
            return torch.stack(vectors).mean(dim=0), rho
        x = self.forward_features(e, mode="merged", rho=rho, generator=generator)
        return F.normalize(self.pool(x), dim=-1), rho

    def predict(
        self, e: Tensor, text: Tensor, tfm: bool = False, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Evaluation: cosine logits (B, C) (no scale, spec 8) and rho (B,), from
        ``view_embeddings`` and the unit class text rows."""
        vectors, rho = self.view_embeddings(e, text, tfm, generator)
        return vectors @ text.to(vectors).t(), rho

    # -- training ------------------------------------------------------------------------------

    def training_losses(
        self,
        e: Tensor,
        labels: Tensor,
        text: Tensor,
        generator: torch.Generator | None = None,
        *,
        experts: Sequence[int] | None = None,
        temperatures: Sequence[float] | None = None,
    ) -> dict[str, Tensor]:
        """Spec 4.4: CE(sigma cos) + 0.5 WMR + 0.1 mean((x_r - e)^2), as a dict of terms.

        Keys "total", "ce", "wmr", "mse" (switched-off terms are 0) and "logits" (the routed
        pass's cosines, for accuracy). The transformer and meanpool baselines train with CE
        only (spec 10.1), whatever cfg.wmr and cfg.mse say. ``experts`` / ``temperatures``
        force the routed / WMR draws (tests, Figure-3 style studies).
        """
        cfg = self.cfg
        sigma = self.logit_scale.exp()
        zero = e.new_zeros(())
        x = self.forward_features(e, mode="routed", experts=experts, generator=generator)
        logits = self.cosine_logits(self.pool(x), text)  # (B, C)
        ce = F.cross_entropy(sigma * logits, labels)
        wmr, mse = zero, zero
        if self.architecture.wmr_mse_losses:
            x_mse = x
            if cfg.wmr:
                x_r = self.forward_features(
                    e, mode="wmr", temperatures=temperatures, generator=generator
                )  # rho = 1 (spec 4.3)
                wmr = self._wmr_term(x_r, x, logits, labels, text, sigma)
                x_mse = x_r
            if cfg.mse:
                mse = (x_mse - e).pow(2).mean()  # frame level, e not detached (spec 4.4, 12)
        w_ce, w_wmr, w_mse = cfg.loss_weights
        total = w_ce * ce + w_wmr * wmr + w_mse * mse
        return {"total": total, "ce": ce, "wmr": wmr, "mse": mse, "logits": logits}

    def _wmr_term(
        self, x_r: Tensor, x: Tensor, logits: Tensor, labels: Tensor, text: Tensor, sigma: Tensor
    ) -> Tensor:
        """Table 7c. "ce": CE with labels. "kl": KL(p_routed || p_wmr), both softmaxes of the
        sigma-scaled cosines at temperature 1, routed target detached, batch mean. "mse": mean
        squared distance to the routed pass's frame features (detached)."""
        kind = self.cfg.wmr_loss
        if kind == "mse":
            return (x_r - x.detach()).pow(2).mean()
        logits_r = sigma * self.cosine_logits(self.pool(x_r), text)
        if kind == "ce":
            return F.cross_entropy(logits_r, labels)
        target = F.softmax((sigma * logits).detach(), dim=-1)
        return F.kl_div(F.log_softmax(logits_r, dim=-1), target, reduction="batchmean")

    # -- deployment ----------------------------------------------------------------------------

    def num_params(self, merged: bool) -> int:
        """Spec 11.4: merged L(12D^2 + 13D) + 77D; training counts every expert. The logit
        scale, text bank and fusion vectors are not counted."""
        if self.architecture.pools_only:
            return 0
        total = sum(p.numel() for n, p in self.named_parameters() if n != "logit_scale")
        if not merged:
            return total
        mlp = self.transformer.resblocks[0].mlp
        one_expert = sum(
            p.numel() for p in (*mlp.fc_up[0].parameters(), *mlp.fc_dn[0].parameters())
        )
        return total - (mlp.n - 1) * one_expert * self.cfg.layers
