"""arml.train_probe: memorisation and SWV-vote precision on hand-made predictions."""

import numpy as np
import pytest
import torch
from torch import nn

from arml.train_probe import ProbeSet, load_probe, probe_networks


class Constant(nn.Module):
    """Predicts a fixed class map for every image (logits: 1 at the class, 0 elsewhere)."""

    def __init__(self, classes: torch.Tensor) -> None:
        super().__init__()
        self.classes = classes  # H×W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(self.classes, 4).permute(2, 0, 1).float()
        return onehot.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


def _probe(truth_rows, pseudo_rows):
    truth = torch.tensor(truth_rows).unsqueeze(0)
    pseudo = torch.tensor(pseudo_rows).unsqueeze(0)
    return ProbeSet(torch.zeros(1, 3, *truth.shape[1:]), pseudo, truth)


def test_memorisation_and_vote_precision_by_hand():
    # 1×4 image: truth 0 0 1 1; pseudo mask wrong at the third pixel (0 0 0 1)
    probe = _probe([[0, 0, 1, 1]], [[0, 0, 0, 1]])
    f_a = Constant(torch.tensor([[0, 0, 0, 1]]))  # copies the pseudo mask exactly
    f_b = Constant(torch.tensor([[0, 0, 1, 1]]))
    f_c = Constant(torch.tensor([[0, 0, 0, 0]]))  # voters disagree at pixels 3 and 4
    out = probe_networks([f_a, f_b, f_c], probe)
    assert out["pm_miou"] == pytest.approx(1.0)
    # F_a vs truth: class 0 IoU 2/3, class 1 IoU 1/2
    assert out["truth_miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["pm_truth_miou"] == out["truth_miou"]  # F_a is the pseudo mask here
    assert out["voter_agreement"] == pytest.approx(2 / 4)
    assert out["disputed_wrong"] == pytest.approx(1 / 2)  # of pixels 3, 4 only pixel 3 is mislabelled
    assert out["pm_wrong"] == pytest.approx(1 / 4)


def test_excluded_pixels_are_not_scored_and_one_network_has_no_votes():
    probe = _probe([[0, 4, 1, 1]], [[0, 0, 4, 0]])
    out = probe_networks([Constant(torch.tensor([[0, 0, 0, 0]]))], probe)
    # scored: pixels 1 and 4 (neither mask is 4); pixel 4 mislabelled
    assert out["pm_wrong"] == pytest.approx(1 / 2)
    assert out["voter_agreement"] is None and out["disputed_wrong"] is None


def test_without_truth_only_the_fit_to_the_pseudo_masks():
    probe = ProbeSet(torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 1]]]), None)
    out = probe_networks([Constant(torch.tensor([[0, 0]]))], probe)
    assert out["truth_miou"] is None and out["pm_wrong"] is None and out["pm_truth_miou"] is None
    assert out["pm_miou"] == pytest.approx(0.25)  # class 0 IoU 1/2, class 1 IoU 0


def test_probe_restores_training_mode():
    net = Constant(torch.tensor([[0, 1]]))
    net.train()
    probe_networks([net], ProbeSet(torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 1]]]), None))
    assert net.training


def test_load_probe_reads_an_even_subset_with_truth(quick_synth):
    probe = load_probe(quick_synth, "luad", quick_synth / "train_gt", limit=5)
    assert len(probe) == 5 and probe.truth is not None
    assert torch.equal(probe.pseudo, probe.truth)  # the masks are the truth here
    assert load_probe(quick_synth, "luad", quick_synth / "train_gt", limit=0) is None
    with pytest.raises(ValueError, match="limit"):
        load_probe(quick_synth, "luad", quick_synth / "train_gt", limit=-1)


def test_epoch_series_pads_reads_probe_and_per_network_values():
    from arml.train_probe import epoch_series

    histories = [
        [{"val_miou": 0.1, "train_probe": {"pm_miou": 0.5}, "voter_agreement": {"F_a": 0.9, "F_b": 0.8}}],
        [{"val_miou": 0.2, "train_probe": None, "voter_agreement": {"F_a": None}}, {"val_miou": 0.3}],
    ]
    val = epoch_series(histories, "val_miou")
    assert val.shape == (2, 2) and val[0, 0] == 0.1 and np.isnan(val[0, 1]) and val[1, 1] == 0.3
    probe = epoch_series(histories, "pm_miou", probe=True)
    assert probe[0, 0] == 0.5 and np.isnan(probe[1, 0])
    agree = epoch_series(histories, "voter_agreement")
    assert agree[0, 0] == 0.9 and np.isnan(agree[1, 0])  # F_a's value of a per-network log
