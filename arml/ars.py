"""Activation Relocalization Scheme (ARS, paper §2.2): criss-cross attention, then reactivation.

ARS refines the classifier's last feature map ``f`` (``B×C×H×W``) before global average pooling:

* :class:`CrissCrossAttention` (Eq. 1–2) lets every position gather context from its row and column.
* :class:`Reactivation` (Eq. 3) damps the strongest responses with ``e^{-x}`` gates so that weaker,
  non-discriminative regions gain relative weight in the CAM.

Each module takes ``recipe``: ``"paper"`` is the method as the paper describes it, with evident bugs fixed;
``"official"`` reproduces the released code (docs/paper_vs_code.md §2.3 and §6 rows 4–8).

>>> import torch
>>> ars = ARS(64, parts="both")
>>> ars(torch.rand(2, 64, 7, 9)).shape
torch.Size([2, 64, 7, 9])
"""

from __future__ import annotations

import torch
from torch import nn

from arml.options import ARS_PARTS, REACTIVATION_VARIANTS, RECIPES, check_choice


def resolve_ars_args(parts: str | bool | None, recipe: str, reactivation_variant: str) -> str | None:
    """Check ARS arguments; return ``parts`` normalised (``True`` → ``"both"``; ``False``, ``"none"`` → None).

    Raises:
        ValueError: an unknown part, recipe or variant, or ``recipe="official"`` with a reactivation variant
            that has no released counterpart.
    """
    if parts is True:
        parts = "both"
    elif parts is False or parts == "none":
        parts = None
    check_choice("ars parts", parts, ARS_PARTS)
    check_choice("recipe", recipe, RECIPES)
    check_choice("reactivation_variant", reactivation_variant, REACTIVATION_VARIANTS)
    if recipe == "official" and reactivation_variant != "code" and parts in ("reactivation", "both"):
        raise ValueError(
            "recipe='official' needs reactivation_variant='code' (the released AMM), "
            f"got {reactivation_variant!r}"
        )
    return parts


def _reduced_channels(in_channels: int, reduction: int, what: str) -> int:
    if in_channels < 1 or reduction < 1 or in_channels // reduction < 1:
        raise ValueError(
            f"{what}: in_channels // reduction must be >= 1, got in_channels={in_channels}, "
            f"reduction={reduction}"
        )
    return in_channels // reduction


class CrissCrossAttention(nn.Module):
    """Criss-cross attention, ARS part 1 (Eq. 1–2; CCNet, Huang et al. 2019).

    1×1 convolutions give a query ``Q`` and a key ``K`` (``C → C/reduction``, with bias) and a value ``V``
    (``C → C``). For the position ``u = (i, j)`` the keys ``Φ_u`` are the ``H + W − 1`` positions of
    column ``j`` and row ``i`` (``u`` itself once); Eq. (1) gives the energies ``s = Q_u · Φ_u``, a softmax
    over these keys gives ``A_u`` and Eq. (2) adds the aggregated values back:
    ``f' = f + γ · Σ_k A_{u,k} V_k`` with a learnable scalar ``γ`` (initialised to 0, CCNet practice; Eq. (2)
    writes no weight). The energies are computed as a column block ``B×H×W×H`` (self entry set to −∞) and a
    row block ``B×H×W×W``, concatenated and normalised over the last axis.

    ``recipe="official"`` reproduces ``tool/cca.py`` of the released code: the self key is counted twice (no
    −∞ mask, ``H + W`` keys), the softmax runs over dim 1 of the ``B×H×W×(H+W)`` energy, i.e. over the
    *query row* ``i`` rather than over the keys (a bug), and ``γ`` is never optimised, so it is frozen at 0
    (``requires_grad=False``) and the module is an identity. Setting ``γ`` by hand still runs the buggy path.

    Args:
        in_channels: ``C``.
        reduction: ``C / C'`` for the query and key maps (8 in the paper's code).
        recipe: ``"paper"`` or ``"official"``.

    Shapes:
        ``B×C×H×W → B×C×H×W``, any ``H, W ≥ 1``.
    """

    def __init__(self, in_channels: int, reduction: int = 8, recipe: str = "paper") -> None:
        super().__init__()
        check_choice("recipe", recipe, RECIPES)
        reduced = _reduced_channels(in_channels, reduction, "CrissCrossAttention")
        self.in_channels, self.reduction, self.recipe = in_channels, reduction, recipe
        self.query = nn.Conv2d(in_channels, reduced, 1)
        self.key = nn.Conv2d(in_channels, reduced, 1)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1), requires_grad=recipe == "paper")

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights ``A`` of Eq. (2), split into the column and the row block.

        Args:
            x: features ``B×C×H×W``.

        Returns:
            ``(a_col, a_row)`` of shapes ``B×H×W×H`` and ``B×H×W×W``: ``a_col[b, i, j, k]`` weighs the key
            ``(k, j)`` and ``a_row[b, i, j, l]`` the key ``(i, l)`` for the query ``(i, j)``. With
            ``recipe="paper"`` each query's weights sum to 1 and ``a_col[b, i, j, i] = 0``; with
            ``"official"`` they sum to 1 over the query row ``i`` instead.
        """
        q, k = self.query(x), self.key(x)
        height = x.shape[2]
        energy_col = torch.einsum("bcij,bckj->bijk", q, k)
        energy_row = torch.einsum("bcij,bcil->bijl", q, k)
        if self.recipe == "paper":
            self_key = torch.eye(height, dtype=torch.bool, device=x.device).view(1, height, 1, height)
            energy_col = energy_col.masked_fill(self_key, float("-inf"))
            dim = -1
        else:
            dim = 1
        attn = torch.cat([energy_col, energy_row], dim=-1).softmax(dim=dim)
        return attn[..., :height], attn[..., height:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``f' = f + γ · Σ_k A_k V_k`` (Eq. 2) for ``x = f`` of shape ``B×C×H×W``."""
        if not self.gamma.requires_grad and not bool(self.gamma.any()):
            return x  # official recipe: γ stays 0, the branch cannot change the output
        a_col, a_row = self.attention(x)
        v = self.value(x)
        context = torch.einsum("bijk,bckj->bcij", a_col, v) + torch.einsum("bijl,bcil->bcij", a_row, v)
        return x + self.gamma * context

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, reduction={self.reduction}, recipe={self.recipe!r}"


class Reactivation(nn.Module):
    """Reactivation attention, ARS part 2 (Eq. 3): damp the strongest responses with exponential gates.

    Eq. (3) reads ``f'' = f' ⊗ E(Conv7×7(P^s_avg(f')))`` with ``E(x) = e^{−x}``. "Spatial average pooling"
    ``P^s_avg`` is ambiguous: pooling *across channels* at every position (a ``1×H×W`` map, which a 7×7
    convolution can take and whose gate is spatial), or the usual spatial GAP (a ``C``-vector, which a 7×7
    convolution cannot take). The released code (``tool/amm.py``, after AMR, Qin et al. 2022) does neither
    alone. Two variants:

    * ``variant="code"`` (default), the code's AMM, with ``E_λ(x) = λ e^{−λx}`` and ``λ = 0.8``:
      channel gate ``a = MLP(GAP(f'))`` (Linear ``C→C/r`` → ReLU → Linear ``C/r→C/r`` → ReLU → Linear
      ``C/r→C``, no sigmoid), ``f_c = f' ⊙ E_λ(a)``; then spatial gate ``m = [max_c f_c; mean_c f_c]``
      (``2×H×W``) → 7×7 conv (1 channel, padding 3, no bias) → ``s``, ``f'' = f_c ⊙ E_λ(s)``. The code's
      BatchNorm after the 7×7 conv is kept in eval mode at its initial state, i.e. an identity (up to
      ``1/√(1+1e−5)``), so it is omitted here.
    * ``variant="eq3"``: Eq. (3) as written, reading ``P^s_avg`` as the mean across channels:
      ``f'' = f' ⊙ e^{−Conv7×7(mean_c f')}``. ``lam`` and ``reduction`` are not used.

    ``recipe="official"`` freezes the channel MLP at its random initialisation (``requires_grad=False``):
    the released optimiser collects only ``nn.Conv2d`` parameters, so the MLP is never trained. It needs
    ``variant="code"``; ``"eq3"`` has no released counterpart.

    Args:
        in_channels: ``C``.
        variant: ``"code"`` or ``"eq3"``.
        lam: ``λ`` of ``E_λ`` (``variant="code"``), > 0.
        reduction: ``r`` of the channel MLP (``variant="code"``).
        recipe: ``"paper"`` or ``"official"``.

    Shapes:
        ``B×C×H×W → B×C×H×W``.
    """

    def __init__(
        self,
        in_channels: int,
        variant: str = "code",
        lam: float = 0.8,
        reduction: int = 4,
        recipe: str = "paper",
    ) -> None:
        super().__init__()
        check_choice("variant", variant, REACTIVATION_VARIANTS)
        check_choice("recipe", recipe, RECIPES)
        if recipe == "official" and variant != "code":
            raise ValueError(f"recipe='official' needs variant='code' (the released AMM), got {variant!r}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        self.in_channels, self.variant, self.lam, self.recipe = in_channels, variant, float(lam), recipe
        if variant == "code":
            hidden = _reduced_channels(in_channels, reduction, "Reactivation")
            self.reduction = reduction
            self.channel_mlp = nn.Sequential(
                nn.Linear(in_channels, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, in_channels),
            )
            self.channel_mlp.requires_grad_(recipe == "paper")
            self.spatial_conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        else:
            self.spatial_conv = nn.Conv2d(1, 1, 7, padding=3, bias=False)

    def _exp_gate(self, x: torch.Tensor) -> torch.Tensor:
        # clamped exponent: features of a few hundred would overflow exp to inf and turn the gate into NaN
        # (0·inf); below e^80 nothing changes
        if self.variant == "code":
            return self.lam * torch.exp((-self.lam * x).clamp(max=80.0))
        return torch.exp((-x).clamp(max=80.0))

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gate ``λ e^{−λ a}`` of shape ``B×C×1×1`` (``variant="code"`` only)."""
        if self.variant != "code":
            raise ValueError("channel_gate exists only for variant='code'")
        a = self.channel_mlp(x.mean(dim=(2, 3)))
        return self._exp_gate(a)[:, :, None, None]

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial gate ``B×1×H×W`` computed from ``x`` (``f_c`` for ``"code"``, ``f'`` for ``"eq3"``)."""
        if self.variant == "code":
            pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        else:
            pooled = x.mean(dim=1, keepdim=True)
        return self._exp_gate(self.spatial_conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``f''`` (Eq. 3) for ``x = f'`` of shape ``B×C×H×W``."""
        if self.variant == "code":
            x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)

    def extra_repr(self) -> str:
        text = f"in_channels={self.in_channels}, variant={self.variant!r}, recipe={self.recipe!r}"
        if self.variant == "code":
            text += f", lam={self.lam}, reduction={self.reduction}"
        return text


class ARS(nn.Module):
    """Activation Relocalization Scheme (§2.2, Fig. 1a): :class:`CrissCrossAttention` → :class:`Reactivation`.

    Args:
        in_channels: ``C`` of the feature map.
        parts: which parts to apply: ``"both"`` (the method; also ``True``), ``"cca"``, ``"reactivation"`` or
            ``None`` (also ``False``, ``"none"``: an identity, for the no-ARS ablation).
        recipe: ``"paper"`` or ``"official"``, passed to both parts.
        reactivation_variant: ``"code"`` or ``"eq3"``, see :class:`Reactivation`.

    Shapes:
        ``B×C×H×W → B×C×H×W``.
    """

    def __init__(
        self,
        in_channels: int,
        parts: str | bool | None = "both",
        recipe: str = "paper",
        reactivation_variant: str = "code",
    ) -> None:
        super().__init__()
        parts = resolve_ars_args(parts, recipe, reactivation_variant)
        self.in_channels, self.parts, self.recipe = in_channels, parts, recipe
        self.reactivation_variant = reactivation_variant
        self.cca = CrissCrossAttention(in_channels, recipe=recipe) if parts in ("cca", "both") else None
        self.reactivation = (
            Reactivation(in_channels, variant=reactivation_variant, recipe=recipe)
            if parts in ("reactivation", "both")
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the relocalised features ``f''`` (``B×C×H×W``)."""
        if self.cca is not None:
            x = self.cca(x)
        if self.reactivation is not None:
            x = self.reactivation(x)
        return x

    def extra_repr(self) -> str:
        if self.parts is None:
            return "parts=None (identity)"
        return (
            f"in_channels={self.in_channels}, parts={self.parts!r}, recipe={self.recipe!r}, "
            f"reactivation_variant={self.reactivation_variant!r}"
        )
