"""The stage-2 recipes as small strategy objects: which networks are trained and what each is scored against.

Every recipe answers two questions: how many networks a run trains (and saves), and, for one augmented
batch, the logits triple ``(own, peer1, peer2)`` of each trained network: its own logits, which receive the
gradient, and the two logits that vote in SWV (Eq. 4) and teach in SRM (Eq. 5–8). The trainer feeds each
triple to Eq. (9) (:func:`arml.losses.loss_terms`) and steps that network's optimiser.

* :class:`ThreePeers` (``recipe="paper"``, ``peers=3``; paper §2.1): three peers F_a, F_b, F_c of the same
  architecture but different initialisations see the same batch; each is trained against the other two.
* :class:`SingleNetwork` (``peers=1``): one network trained with plain CE (``omega=None``,
  ``relation=None``); its own detached logits stand in for the voters, which CE ignores.
* :class:`OfficialRecipe` (``recipe="official"``; docs/paper_vs_code.md §4.2, §6 row 1): the released code.
  One network runs three times per batch in train mode; only the first pass is trained, the two extra passes
  (under ``no_grad``, differing only by dropout) are the voters and teachers.

Cost: the three peers' activations are all held until the last peer's backward (3× one network's), where
the official recipe holds one network's plus two inference passes.

>>> create_recipe(SegConfig("data", "train_gt", recipe="official")).n_models  # doctest: +SKIP
1
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from arml.datasets import IGNORE_INDEX, NUM_CLASSES
from arml.evaluation import autocast, training_amp
from arml.losses import loss_terms
from arml.models import create_segmenter
from arml.options import PEER_NAMES

if TYPE_CHECKING:
    from arml.stage2 import SegConfig

Triple = tuple[Tensor, Tensor, Tensor]


class Recipe(abc.ABC):
    """Base of the recipes: subclasses set :attr:`n_models` and implement :meth:`forward` and :meth:`assign`."""

    n_models: ClassVar[int]
    votes: ClassVar[bool] = True  # two distinct voters per trained network (their agreement is logged)

    @classmethod  # noqa: B027 - not abstract: most recipes accept every config
    def check(cls, config: SegConfig) -> None:
        """Raise ``ValueError`` when ``config`` asks for something this recipe cannot do."""

    @property
    def names(self) -> tuple[str, ...]:
        """The trained networks' names: ``F_a`` (, ``F_b``, ``F_c``)."""
        return PEER_NAMES[: self.n_models]

    @abc.abstractmethod
    def forward(self, models: Sequence[nn.Module], images: Tensor) -> list[Tensor]:
        """The batch's logits, in the order :meth:`assign` reads them."""

    @abc.abstractmethod
    def assign(self, logits: list[Tensor]) -> list[Triple]:
        """One ``(own, peer1, peer2)`` triple per trained network, in the order of the models."""

    def triples(self, models: Sequence[nn.Module], images: Tensor, amp: bool = False) -> list[Triple]:
        """Run the networks on ``images`` (autocast float16 with ``amp``) and return the float32 triples.

        The peers are detached inside the losses, so network k's loss reaches network k only, and a step
        of one network cannot change the others' logits: all were computed before any step.
        """
        if len(models) != self.n_models:
            raise ValueError(f"{type(self).__name__} trains {self.n_models} network(s), got {len(models)}")
        with autocast(images.device, amp):
            logits = self.forward(models, images)
        return self.assign([out.float() for out in logits])


class ThreePeers(Recipe):
    """Three independent peers, each trained against the other two (paper §2.1, Eq. 9)."""

    n_models = 3

    def forward(self, models: Sequence[nn.Module], images: Tensor) -> list[Tensor]:
        return [m(images) for m in models]

    def assign(self, logits: list[Tensor]) -> list[Triple]:
        a, b, c = logits
        return [(a, b, c), (b, a, c), (c, a, b)]


class SingleNetwork(Recipe):
    """One network with plain CE; its detached logits stand in for the two voters."""

    n_models = 1
    votes: ClassVar[bool] = False  # no voters: their agreement is not measured

    @classmethod
    def check(cls, config: SegConfig) -> None:
        if config.omega is not None or config.relation is not None:
            raise ValueError(
                "SegConfig.peers=1 trains a single network with plain cross-entropy: SWV needs two voting peers "
                "and relation losses need two teachers, so set omega=None and relation=None (--omega none "
                f"--relation none; got omega={config.omega!r}, relation={config.relation!r}), or use peers=3 "
                "(--peers 3)"
            )

    def forward(self, models: Sequence[nn.Module], images: Tensor) -> list[Tensor]:
        return [models[0](images)]

    def assign(self, logits: list[Tensor]) -> list[Triple]:
        (own,) = logits
        return [(own, own.detach(), own.detach())]


class OfficialRecipe(Recipe):
    """The released code: one network run three times, the first pass trained, two ``no_grad`` passes voting."""

    n_models = 1

    def forward(self, models: Sequence[nn.Module], images: Tensor) -> list[Tensor]:
        logits = [models[0](images)]
        with torch.no_grad():
            logits += [models[0](images), models[0](images)]
        return logits

    def assign(self, logits: list[Tensor]) -> list[Triple]:
        a, b, c = logits
        return [(a, b, c)]


RECIPE_CLASSES: dict[tuple[str, int], type[Recipe]] = {
    ("paper", 3): ThreePeers,
    ("paper", 1): SingleNetwork,
    ("official", 3): OfficialRecipe,
}


def create_recipe(config: SegConfig) -> Recipe:
    """The recipe of a stage-2 config, from its ``recipe`` and ``peers``, after checking the config fits it.

    Raises:
        ValueError: no recipe for that pair (``recipe="official"`` needs ``peers=3``), or the recipe cannot
            honour the config (``peers=1`` with SWV or a relation loss).
    """
    key = (config.recipe, config.peers)
    if key not in RECIPE_CLASSES:
        raise ValueError(
            f"no stage-2 recipe for recipe={key[0]!r} with peers={key[1]!r}: recipe='official' runs one network "
            f"three times per batch; it needs peers=3 (--peers 3; valid pairs: {list(RECIPE_CLASSES)})"
        )
    recipe = RECIPE_CLASSES[key]
    recipe.check(config)
    return recipe()


@dataclass
class Networks:
    """What a stage-2 run trains: the recipe, its networks (on ``device``), one optimiser each, the AMP scaler.

    Built by :func:`build_networks`; :meth:`step` is one training iteration.
    """

    recipe: Recipe
    models: list[nn.Module]
    optimizers: list[torch.optim.Optimizer]
    scaler: torch.amp.GradScaler
    device: torch.device
    use_amp: bool = False

    def step(self, images: Tensor, target: Tensor, loss_options: dict) -> list[tuple[float, float, float]]:
        """One iteration: the recipe's forward passes, then each trained network's Eq. (9) loss and step.

        Args:
            images: the augmented batch, on :attr:`device`.
            target: its ``B×H×W`` pseudo mask with the ignore label.
            loss_options: keyword arguments of :func:`arml.losses.loss_terms` (``SegConfig.loss_options()``).

        Returns:
            Per trained network, ``(loss, supervised, relation, voter agreement)`` as floats: the agreement is
            the share of labelled pixels where the network's two voters predict the same class (what SWV
            weights by ω); relation and agreement are NaN where the recipe has none.
        """
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        values = []
        for k, triple in enumerate(self.recipe.triples(self.models, images, self.use_amp)):
            terms = loss_terms(*triple, target, **loss_options)
            if not self.scaler.is_enabled() and not torch.isfinite(terms.total):
                raise FloatingPointError(
                    f"non-finite loss {terms.total.item()} for {PEER_NAMES[k]}; lower SegConfig.lr"
                )
            self.scaler.scale(terms.total).backward()
            self.scaler.step(self.optimizers[k])
            relation = math.nan if terms.relation is None else terms.relation.item()
            values.append(
                (terms.total.item(), terms.supervised.item(), relation, self._agreement(triple, target))
            )
        self.scaler.update()
        return values

    def _agreement(self, triple, target: Tensor) -> float:
        if not getattr(self.recipe, "votes", True):
            return math.nan
        with torch.no_grad():
            labelled = target != IGNORE_INDEX
            same = triple[1].argmax(1) == triple[2].argmax(1)
            return float(same[labelled].float().mean()) if labelled.any() else math.nan

    def weights(self) -> list[dict]:
        """A CPU copy of every network's state dict."""
        return [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in self.models]

    def state_dict(self) -> dict:
        """Weights, optimiser and scaler states (the training part of ``last.pt``)."""
        return {
            "models": self.weights(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved; ``state`` may hold ``models`` only (``best.pt``)."""
        for m, weights in zip(self.models, state["models"], strict=True):
            m.load_state_dict(weights)
        for opt, opt_state in zip(self.optimizers, state.get("optimizers", ()), strict=False):
            opt.load_state_dict(opt_state)
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def build_models(config: SegConfig) -> list[nn.Module]:
    """The networks a run's recipe trains, on the CPU: peer k initialised under ``torch.manual_seed(seed + k)``."""
    models = []
    for k in range(create_recipe(config).n_models):
        torch.manual_seed(config.seed + k)
        models.append(
            create_segmenter(
                config.arch,
                config.encoder,
                num_classes=NUM_CLASSES,
                encoder_depth=config.encoder_depth,
                pretrained=config.pretrained,
                input_norm=config.input_norm,
            )
        )
    return models


def make_optimizer(config: SegConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One network's optimiser: SGD with momentum (the paper's, §3.2) or AdamW (``config.optimizer``).

    The learning rate follows poly decay either way (:func:`arml.runtime.set_poly_lr`). AdamW is the ``cpu``
    profile's choice: from random initialisation on 400 patches, SGD at lr 0.01 still gains after 32 epochs,
    while AdamW at lr 1e-3 is at its plateau after 8 (docs/architecture.md, "Convergence")."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def build_networks(config: SegConfig, device: torch.device) -> Networks:
    """The recipe's fresh networks (:func:`build_models`) on ``device``, one optimiser each (:func:`make_optimizer`), the AMP scaler.

    The networks are kept in ``channels_last`` memory format: convolutions run 1.2–1.5× faster that way
    on the CPU (``benchmarks/stage2_speed.py``) and on tensor-core GPUs; the numbers they compute are the
    same up to float rounding."""
    use_amp = training_amp(device, config.amp)
    models = [m.to(device, memory_format=torch.channels_last) for m in build_models(config)]
    optimizers = [make_optimizer(config, m) for m in models]
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and device.type == "cuda")  # bf16 needs none
    return Networks(create_recipe(config), models, optimizers, scaler, device, use_amp)
