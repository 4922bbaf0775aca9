"""Stage 2 (arml.stage2, arml.recipes): config checks, recipes, a tiny end-to-end run on noisy masks, resume,
evaluation of the run."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import arml.stage2 as stage2
from arml import recipes
from arml.datasets import CLASS_NAMES, IGNORE_INDEX, list_pngs, read_mask, write_mask
from arml.evaluation import evaluate, format_metrics
from arml.losses import mutual_loss
from arml.models import create_segmenter
from arml.runtime import load_checkpoint
from arml.stage2 import SegConfig, augment, train_segmenter
from arml.synth import generate_dataset


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tiny convolutions gain nothing from more, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def noisy_root(tmp_path_factory):
    """The synthetic quick dataset (48/16/16 images of 64 px) with 20 %-noisy pseudo masks in train_PM/noisy."""
    root = generate_dataset(
        tmp_path_factory.mktemp("stage2") / "quick", "quick", seed=0, progress=False, workers=0
    )
    rng = np.random.default_rng(0)
    for path in list_pngs(root / "train"):
        mask = read_mask(root / "train_gt" / path.name)
        flip = (rng.random(mask.shape) < 0.2) & (mask < 4)
        mask[flip] = rng.integers(0, 4, size=int(flip.sum()))
        write_mask(root / "train_PM" / "noisy" / path.name, mask)
    return root


def tiny_config(root, **changes) -> SegConfig:
    base = SegConfig(
        data_root=str(root),
        masks="noisy",
        encoder="resnet10t",
        encoder_depth=3,
        epochs=2,
        batch_size=8,
        progress=False,
        eval_batch_size=8,
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def straight_run(noisy_root, tmp_path_factory):
    """Three peers, two epochs, without interruption; shared by the smoke, resume and evaluation tests."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    return out, train_segmenter(tiny_config(noisy_root), out)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dataset": "camelyon"}, r"dataset must be one of \['luad', 'bcss'\]"),
        ({"recipe": "released"}, r"recipe must be one of \['paper', 'official'\]"),
        ({"relation": "mse"}, r"relation must be one of \['crl', 'kl', 'pt', 'st', None\]"),
        ({"peers": 2}, r"peers must be one of \[1, 3\]"),
        ({"peers": 1}, "peers=1 trains a single network with plain cross-entropy"),
        ({"peers": 1, "omega": None}, "set omega=None and relation=None"),
        ({"recipe": "official", "peers": 1, "omega": None, "relation": None}, "needs peers=3"),
        ({"omega": 0.5}, "omega must be None or >= 1"),
        ({"omega": "two"}, "omega must be None or >= 1"),
        ({"omega": True}, "omega must be None or >= 1"),
        ({"lam": 1.5}, r"lam must be a number in \[0.0, 1.0\]"),
        ({"normalize": "sum"}, r"normalize must be one of \['weights', 'pixels'\]"),
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"batch_size": 1}, "batch_size must be >= 2 with relation='st'"),
        ({"lr": 0}, r"lr must be a number in \(0.0"),
        ({"blur": "yes"}, "blur must be True or False"),
        ({"device": "tpu:x"}, "device must be 'auto', 'cpu'"),
        ({"input_norm": "zscore"}, r"input_norm must be one of \['none', 'imagenet'\]"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        replace(SegConfig("root", "noisy"), **changes)


def test_config_json_round_trip_and_unknown_fields():
    config = SegConfig("root", "noisy", omega=math.inf, relation=None, peers=3)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["omega"] == "inf"
    assert SegConfig.from_dict(data) == config
    assert SegConfig("root", "x", peers=1, omega=None, relation=None).n_models == 1
    assert SegConfig("root", "x", recipe="official").n_models == 1
    with pytest.raises(ValueError, match=r"unknown SegConfig fields \['bogus'\]"):
        SegConfig.from_dict({**data, "bogus": 1})
    assert SegConfig("root", "x", omega="none", peers=1, relation=None).omega is None
    assert SegConfig("root", "x", omega=3).omega == 3.0 and isinstance(
        SegConfig("root", "x", omega=3).omega, float
    )


def test_config_fields_carry_help_and_the_shared_choices():
    from dataclasses import fields

    from arml.options import PEER_COUNTS, RECIPES, SWV_NORMALIZATIONS

    meta = {f.name: f.metadata for f in fields(SegConfig)}
    assert all(m["help"] for m in meta.values())
    assert meta["recipe"]["choices"] == RECIPES and meta["peers"]["choices"] == PEER_COUNTS
    assert meta["normalize"]["choices"] == SWV_NORMALIZATIONS
    assert None in meta["relation"]["choices"] and "st" in meta["relation"]["choices"]
    assert not meta["data_root"]["cli"] and meta["masks"]["cli"]


def test_missing_mask_folder_lists_the_available_ones(noisy_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"found: \['noisy'\]"):
        train_segmenter(tiny_config(noisy_root, masks="PM_bn7"), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # a run that fails its checks leaves no folder behind


def test_augment_flips_image_and_mask_together_and_blurs_the_image_only():
    images = torch.rand(16, 3, 8, 8)
    masks = torch.arange(64).reshape(1, 8, 8).repeat(16, 1, 1) % 4
    out_i, out_m = augment(images, masks, torch.Generator().manual_seed(3), hflip=True, blur=False)
    flipped = [not torch.equal(m, masks[0]) for m in out_m]
    assert 0 < sum(flipped) < 16  # p = 0.5 per image
    for i, f in enumerate(flipped):
        assert torch.equal(out_i[i], images[i].flip(-1) if f else images[i])
    out_i, out_m = augment(images, masks, torch.Generator().manual_seed(3), hflip=False, blur=True)
    assert torch.equal(out_m, masks)
    changed = [not torch.equal(a, b) for a, b in zip(out_i, images, strict=True)]
    assert 0 < sum(changed) < 16
    again, _ = augment(images, masks, torch.Generator().manual_seed(3), hflip=False, blur=True)
    assert torch.equal(again, out_i)


def test_a_peer_loss_reaches_only_its_own_network():
    torch.manual_seed(0)
    peers = [create_segmenter("pspnet", "resnet10t", encoder_depth=3) for _ in range(3)]
    before = [[p.detach().clone() for p in m.parameters()] for m in peers]
    images, target = torch.rand(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    target[:, :4] = IGNORE_INDEX
    logits = [m(images) for m in peers]
    loss = mutual_loss(logits[0], logits[1], logits[2], target, omega=2.0, lam=0.2, relation="st")
    loss.backward()
    assert all(p.grad is not None for p in peers[0].parameters() if p.requires_grad)
    assert all(p.grad is None for m in peers[1:] for p in m.parameters())
    torch.optim.SGD(peers[0].parameters(), lr=0.1).step()
    assert any(not torch.equal(a, b) for a, b in zip(before[0], peers[0].parameters(), strict=True))
    for m, old in zip(peers[1:], before[1:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(old, m.parameters(), strict=True))


def _tiny_models(n):
    torch.manual_seed(0)
    return [create_segmenter("pspnet", "resnet10t", encoder_depth=3) for _ in range(n)]


def test_three_peers_score_each_peer_against_the_other_two():
    recipe, models, images = recipes.ThreePeers(), _tiny_models(3), torch.rand(2, 3, 32, 32)
    for m in models:
        m.eval()  # no dropout, so the reference forward below gives the same logits
    assert recipe.n_models == 3 and recipe.names == ("F_a", "F_b", "F_c")
    triples = recipe.triples(models, images)
    with torch.no_grad():
        logits = [m(images) for m in models]
    assert len(triples) == 3
    for triple, order in zip(triples, [(0, 1, 2), (1, 0, 2), (2, 0, 1)], strict=True):
        assert all(torch.equal(t, logits[k]) for t, k in zip(triple, order, strict=True))
        assert triple[0].requires_grad
    with pytest.raises(ValueError, match="trains 3 network"):
        recipe.triples(models[:1], images)


def test_single_network_votes_with_its_own_detached_logits():
    recipe, models, images = recipes.SingleNetwork(), _tiny_models(1), torch.rand(2, 3, 32, 32)
    assert recipe.n_models == 1 and recipe.names == ("F_a",)
    ((own, peer1, peer2),) = recipe.triples(models, images)
    assert own.requires_grad and not peer1.requires_grad and not peer2.requires_grad
    assert torch.equal(own, peer1) and torch.equal(own, peer2)


def test_official_recipe_runs_one_network_three_times_and_trains_the_first_pass():
    torch.manual_seed(0)
    net = create_segmenter("pspnet", "resnet10t", encoder_depth=3)  # PSPNet: Dropout2d(0.2) in train mode
    recipe, images = recipes.OfficialRecipe(), torch.rand(2, 3, 32, 32)
    assert recipe.n_models == 1
    ((own, peer1, peer2),) = recipe.triples([net], images)
    assert own.requires_grad and not peer1.requires_grad and not peer2.requires_grad
    assert not torch.equal(own, peer1) and not torch.equal(peer1, peer2)  # three stochastic passes
    net.eval()
    ((own, peer1, peer2),) = recipe.triples([net], images)
    assert torch.equal(own, peer1) and torch.equal(peer1, peer2)  # only dropout told them apart


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({}, recipes.ThreePeers),
        ({"recipe": "official"}, recipes.OfficialRecipe),
        ({"peers": 1, "omega": None, "relation": None}, recipes.SingleNetwork),
    ],
)
def test_create_recipe_and_one_step_update_every_trained_network(changes, kind):
    config = replace(SegConfig("root", "noisy", encoder="resnet10t", encoder_depth=3), **changes)
    assert isinstance(recipes.create_recipe(config), kind)
    nets = recipes.build_networks(config, torch.device("cpu"))
    assert len(nets.models) == len(nets.optimizers) == config.n_models == kind.n_models
    before = [[p.detach().clone() for p in m.parameters()] for m in nets.models]
    images, target = torch.rand(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    values = nets.step(images, target, config.loss_options())
    assert len(values) == config.n_models
    for (loss, supervised, relation, agreement), m, old in zip(values, nets.models, before, strict=True):
        assert math.isfinite(loss) and math.isfinite(supervised)
        # the share of labelled pixels where the two voters agree; a single network has no voters
        assert math.isnan(agreement) if kind is recipes.SingleNetwork else 0 <= agreement <= 1
        if config.relation is None:
            assert loss == supervised and math.isnan(relation)
        else:
            assert loss == pytest.approx((1 - config.lam) * supervised + config.lam * relation)
        assert any(not torch.equal(a, b) for a, b in zip(old, m.parameters(), strict=True))


def test_three_peers_train_on_noisy_masks(straight_run):
    out, metrics = straight_run
    assert {p.name for p in out.iterdir()} >= {
        "config.json",
        "last.pt",
        "best.pt",
        "history.json",
        "metrics.json",
    }
    history = json.loads((out / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    first, last = history[0], history[-1]
    assert set(first["loss"]) == {"F_a", "F_b", "F_c"}

    def mean(entry, term):
        return np.mean(list(entry[term].values()))

    # Eq. (9) total and its SWV term both fall. (On fewer batches per epoch L_st often rises first:
    # the peers drift apart from their shared random start before their relations align.)
    assert mean(last, "loss") < mean(first, "loss")
    assert mean(last, "supervised") < mean(first, "supervised")
    for entry in history:
        for k in ("F_a", "F_b", "F_c"):
            expected = 0.8 * entry["supervised"][k] + 0.2 * entry["relation"][k]
            assert entry["loss"][k] == pytest.approx(expected)
    for name in ("F_a", "F_b", "F_c", "ensemble"):
        assert 0.0 <= metrics[name]["miou"] <= 1.0
        assert len(metrics[name]["iou"]) == 4
    assert metrics["best_epoch"] in (0, 1)
    assert metrics["val_miou"] == history[metrics["best_epoch"]]["val_miou"]
    assert metrics["seconds_per_epoch"] > 0
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert len(load_checkpoint(out / "best.pt")["models"]) == 3


def test_resume_after_a_kill_mid_epoch_matches_the_straight_run(
    straight_run, noisy_root, tmp_path, monkeypatch
):
    straight_out, straight_metrics = straight_run
    config = tiny_config(noisy_root)
    out = tmp_path / "resumed"
    calls = {"n": 0}

    def killed_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 6 + 2:  # 6 batches of 8 in epoch 1, then two batches of epoch 2
            raise KeyboardInterrupt
        return augment(*args, **kwargs)

    monkeypatch.setattr(stage2, "augment", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(config, out)
    assert load_checkpoint(out / "last.pt")["epoch"] == 0
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(stage2, "augment", augment)
    metrics = train_segmenter(replace(config, progress=True), out)  # progress does not change the result

    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight_out / name), load_checkpoint(out / name)
        for sa, sb in zip(a["models"], b["models"], strict=True):
            assert sa.keys() == sb.keys()
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
    drop = ("seconds_per_epoch",)
    assert {k: v for k, v in metrics.items() if k not in drop} == {
        k: v for k, v in straight_metrics.items() if k not in drop
    }

    def untimed(path):
        return [
            {k: v for k, v in h.items() if "seconds" not in k}
            for h in json.loads(path.read_text())["history"]
        ]

    assert untimed(out / "history.json") == untimed(straight_out / "history.json")

    # A finished run is returned, not retrained; another config in the same folder is refused.
    monkeypatch.setattr(stage2, "augment", killed_in_epoch_two)
    calls["n"] = 10**6
    assert train_segmenter(config, out) == json.loads((out / "metrics.json").read_text())
    with pytest.raises(ValueError, match=r"different configuration \(epochs: 2 → 3\)"):
        train_segmenter(replace(config, epochs=3), out)


def test_official_recipe_trains_and_saves_one_network(noisy_root, tmp_path):
    out = tmp_path / "official"
    metrics = train_segmenter(tiny_config(noisy_root, recipe="official", epochs=1), out)
    assert len(load_checkpoint(out / "best.pt")["models"]) == 1
    assert len(load_checkpoint(out / "last.pt")["optimizers"]) == 1
    assert [k for k, v in metrics.items() if isinstance(v, dict) and k != "train_probe"] == ["F_a"]
    assert 0.0 <= metrics["F_a"]["miou"] <= 1.0
    assert list(json.loads((out / "history.json").read_text())["history"][0]["loss"]) == ["F_a"]


def test_evaluate_reproduces_the_test_metrics_and_formats_them(straight_run, noisy_root):
    out, metrics = straight_run
    again = evaluate(out, batch_size=3, device="cpu")
    for name in ("F_a", "F_b", "F_c", "ensemble"):
        assert again[name] == metrics[name]
    assert again["best_epoch"] == metrics["best_epoch"]
    table = format_metrics(again, CLASS_NAMES["luad"])
    for word in (*CLASS_NAMES["luad"], "mIoU", "Dice", "ACC", "FwIoU", "F_a", "F_b", "F_c", "ensemble"):
        assert word in table
    assert f"{100 * metrics['F_a']['miou']:.2f}" in table
    assert format_metrics(again) == table  # class names from the recorded dataset
    val = evaluate(out, data_root=noisy_root, split="val", device="cpu")
    assert val["split"] == "val"
    assert val["F_a"]["miou"] == pytest.approx(metrics["val_miou"])
    with pytest.raises(ValueError, match="split must be 'val' or 'test'"):
        evaluate(out, split="train")


def test_data_root_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert SegConfig("data/x", "noisy").data_root == str(tmp_path.resolve() / "data" / "x")


def test_a_finished_run_answers_only_for_its_data_and_evaluate_says_what_it_scored(
    straight_run, noisy_root, tmp_path, monkeypatch
):
    import shutil

    out, metrics = straight_run
    assert metrics["data_root"] == str(noisy_root.resolve())
    recorded = json.loads((out / "data.json").read_text())
    assert set(recorded["folders"]) == {"train", "masks", "val/img", "val/mask", "test/img", "test/mask"}
    assert recorded["folders"]["masks"]["path"] == "train_PM/noisy"

    moved = shutil.copytree(noisy_root, tmp_path / "moved")  # the same files elsewhere: the same run
    again = train_segmenter(tiny_config(moved), out)
    assert again == {**metrics, "data_root": str(moved)}

    default = evaluate(out, device="cpu")  # the run now records where its data is
    assert default["data_root"] == default["run_data_root"] == str(moved.resolve())
    assert default["data_matches_run"] is True

    name = list_pngs(moved / "test" / "img")[0].name
    for kind in ("img", "mask"):
        (moved / "test" / kind / name).unlink()
    with pytest.raises(ValueError, match=r"made from other data") as err:
        train_segmenter(tiny_config(moved), out)
    message = str(err.value)
    assert "test/img/: 16 files" in message and "→ 15 files" in message and str(moved) in message
    assert f"arml evaluate --checkpoint {out}" in message and "--restart" in message
    with pytest.raises(ValueError, match=r"nowhere \(--data\) does not exist"):
        train_segmenter(tiny_config(tmp_path / "nowhere"), out)

    monkeypatch.chdir(tmp_path)  # a relative --data is read from here, and the result says so, absolute
    other = evaluate(out, data_root="moved", device="cpu")
    assert other["data_root"] == str(moved.resolve()) and other["data_matches_run"] is False
    assert other["run_data_root"] == str(moved.resolve())
    assert other["F_a"]["pixels"] < default["F_a"]["pixels"]  # 15 test images scored, not 16


def test_inputs_and_device_are_checked_before_the_first_epoch(noisy_root, tmp_path):
    import shutil

    from arml.pseudo_masks import manifest_digest

    root = shutil.copytree(noisy_root, tmp_path / "copy")
    manifest = {"config": {"method": "cam"}, "classifier": {"weights_digest": "w"}, "dataset": "luad"}
    (root / "train_PM" / "noisy" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(
        ValueError, match=r"noisy\) is incomplete: its making was interrupted.*arml pseudo-masks"
    ):
        train_segmenter(tiny_config(root), tmp_path / "run")
    (root / "train_PM" / "noisy" / "manifest.json").write_text(json.dumps({**manifest, "complete": True}))
    assert stage2.data_of(tiny_config(root))["upstream"] == {"masks manifest": manifest_digest(manifest)}
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match="asks for CUDA, which is not available here; use --device auto or cpu"
        ):
            train_segmenter(tiny_config(root, device="cuda"), tmp_path / "run")
    val_mask = list_pngs(root / "val" / "mask")[0]
    write_mask(val_mask, np.zeros((32, 32), dtype=np.uint8))  # a val mask of the wrong size
    with pytest.raises(ValueError, match=r"the val split fails the data check") as err:
        train_segmenter(tiny_config(root), tmp_path / "run")
    assert f"{val_mask}: mask size (32, 32) differs from its image size (64, 64)" in str(err.value)
    shutil.copy(noisy_root / "val" / "mask" / val_mask.name, val_mask)
    test_mask = list_pngs(root / "test" / "mask")[0]
    write_mask(test_mask, np.full((64, 64), 3, dtype=np.uint8))
    with Image.open(test_mask) as img:  # value 7: write_mask refuses it, so write the PNG by hand
        img.putpixel((0, 0), 7)
        img.save(test_mask)
    with pytest.raises(ValueError, match=r"the test split fails the data check") as err:
        train_segmenter(tiny_config(root), tmp_path / "run")  # found before training, not after
    assert f"{test_mask}: mask values outside 0..4: [7]" in str(err.value)
    with pytest.raises(ValueError, match=r"--dataset bcss does not fit this data.*use --dataset luad"):
        train_segmenter(tiny_config(root, dataset="bcss"), tmp_path / "run")
    shutil.rmtree(root / "test")
    with pytest.raises(FileNotFoundError, match=r"copy/test/img: no test images"):
        train_segmenter(tiny_config(root), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_pseudo_masks_made_from_other_training_images_are_refused(tiny_root):
    import shutil

    from arml.runfolder import data_record
    from arml.runtime import write_json

    folder = tiny_root / "train_PM" / "pm"
    shutil.copytree(tiny_root / "train_gt", folder)
    manifest = {"complete": True, "data": data_record(tiny_root, {"train": tiny_root / "train"})}
    write_json(folder / "manifest.json", manifest)
    config = SegConfig(str(tiny_root), masks="pm")
    assert stage2.resolve_mask_dir(config) == folder
    image = list_pngs(tiny_root / "train")[0]
    Image.new("RGB", (16, 16), (250, 10, 10)).save(image)  # new content, another size
    with pytest.raises(ValueError, match=r"were made from other training images \(train/: .*--overwrite"):
        stage2.resolve_mask_dir(config)
    (folder / "manifest.json").unlink()  # masks from elsewhere (e.g. the released code's): taken as given
    assert stage2.resolve_mask_dir(config) == folder


def test_make_optimizer_is_sgd_by_default_and_adamw_on_request():
    net = torch.nn.Linear(3, 2)
    sgd = recipes.make_optimizer(SegConfig("x", masks="m"), net)
    assert isinstance(sgd, torch.optim.SGD)
    assert (
        sgd.defaults["lr"] == 5e-3
        and sgd.defaults["momentum"] == 0.9
        and sgd.defaults["weight_decay"] == 5e-4
    )
    adamw = recipes.make_optimizer(
        SegConfig("x", masks="m", optimizer="adamw", lr=1e-3, weight_decay=1e-4), net
    )
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["lr"] == 1e-3 and adamw.defaults["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="optimizer"):
        SegConfig("x", masks="m", optimizer="adam")
