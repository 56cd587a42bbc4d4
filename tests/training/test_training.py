import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from interpret_segmentation import training
from interpret_segmentation.datasets import generate_dataset
from interpret_segmentation.models import UNet
from interpret_segmentation.training import (
    default_unet,
    load_checkpoint,
    save_checkpoint,
    score_segmenter,
    segmentation_loss,
    train,
)
from interpret_segmentation.training.loop import _scheduler


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (5, 3)])
@pytest.mark.parametrize("global_context", [True, False])
def test_unet_keeps_the_input_size(size, global_context):
    torch.manual_seed(0)
    model = UNet(in_channels=2, out_channels=3, width=4, depth=3, global_context=global_context)
    assert model(torch.rand(2, 2, *size)).shape == (2, 3, *size)
    with pytest.raises(ValueError, match=r"x: expected a tensor \(B, 2, H, W\)"):
        model(torch.rand(2, 1, *size))
    with pytest.raises(ValueError, match="width"):
        UNet(width=0)


def test_global_context_lets_one_side_decide_the_other():
    """With the context path a pixel far from a change still responds to it; without it, a
    depth-2 U-Net's receptive field (about 40 px) cannot reach 100 px away."""
    image = torch.zeros(1, 1, 64, 128)
    changed = image.clone()
    changed[..., 90:] = 5.0
    for context, reaches in ((True, True), (False, False)):
        torch.manual_seed(0)
        model = UNet(width=4, depth=2, global_context=context).eval()
        with torch.no_grad():
            difference = (model(changed) - model(image))[..., :, :20].abs().max()
        assert (difference > 0) == reaches  # exactly unchanged without the context path


def test_loss_is_bce_plus_soft_dice():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    soft_dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert segmentation_loss(logits, target) == pytest.approx(float(bce + 1 - soft_dice), rel=1e-6)


def _toy_sets():
    """A pixel is foreground where it is bright: learnable in a few steps."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 16, 16, generator=generator)
    images = (images > 0.7).float() * 0.8 + 0.1
    masks = (images > 0.5).float()
    return TensorDataset(images[:16], masks[:16]), TensorDataset(images[16:], masks[16:])


def test_train_logs_every_epoch_saves_checkpoints_and_never_overwrites(tmp_path):
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, global_context=False)
    model.train()
    lines = []
    results = tmp_path / "results" / "run.txt"
    history = train(model, *_toy_sets(), epochs=6, lr=0.05, batch_size=4,
                    results_path=results, checkpoint_dir=tmp_path, progress=False,
                    log=lines.append)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert results.read_text().splitlines() == lines
    assert all("train_loss" in line and "val_dice" in line and "val_hausdorff" in line
               for line in lines)
    assert history[-1]["val_dice"] > 0.9  # the toy rule is learnt
    for epoch in (1, 6):
        assert (tmp_path / f"testnet_{epoch}.pth").exists()
    reloaded = load_checkpoint(UNet(width=4, depth=2, global_context=False),
                               tmp_path / "testnet_6.pth")
    scores = score_segmenter(reloaded, _toy_sets()[1])
    assert scores["dice"] == pytest.approx(history[-1]["val_dice"])
    before = results.read_text()
    with pytest.raises(FileExistsError, match="never overwritten"):
        train(model, *_toy_sets(), epochs=1, lr=0.01, batch_size=4, results_path=results,
              checkpoint_dir=tmp_path, progress=False, log=lines.append)
    assert results.read_text() == before


def test_checkpoints_load_weights_only(tmp_path):
    torch.manual_seed(1)
    model = default_unet()
    path = save_checkpoint(model, tmp_path / "m.pth")
    fresh = load_checkpoint(default_unet(), path)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    torch.save({"weights": np.arange(3)}, tmp_path / "pickled.pth")  # not tensors only
    with pytest.raises(ValueError, match="not a state dict saved with torch.save"):
        load_checkpoint(default_unet(), tmp_path / "pickled.pth")
    with pytest.raises(FileNotFoundError, match="testnet train"):
        load_checkpoint(default_unet(), tmp_path / "missing.pth")


def test_dataset_splits(tmp_path):
    root = generate_dataset(tmp_path / "d", n=20, size=48, progress=False)
    train_set, val_set = training.dataset_splits(root)
    assert len(train_set) == 16 and len(val_set) == 4
    assert not set(train_set.indices) & set(val_set.indices)
    assert len(training.dataset_splits(root, n_train=5, n_val=2)[0]) == 5
    with pytest.raises(ValueError, match="n_train: expected at most 16"):
        training.dataset_splits(root, n_train=17)


def test_triangle_is_split_70_30_like_the_paper(tmp_path):
    from interpret_segmentation.datasets import generate_triangle_dataset, triangle_split

    root = generate_triangle_dataset(tmp_path / "t", n=20, size=96, progress=False)
    train_set, val_set = training.dataset_splits(root)
    assert (train_set.indices, val_set.indices) == triangle_split(20)
    assert len(train_set) == 14 and len(val_set) == 6
    assert training.training_defaults(root) == (training.TRIANGLE_MODEL, training.TRIANGLE_TRAINING)
    assert training.training_defaults(tmp_path) == (training.DEFAULT_MODEL,
                                                    training.DEFAULT_TRAINING)


@pytest.mark.parametrize("settings", [
    dict(width=4, depth=5), dict(width=2, depth=2, global_context=False, norm="group"),
    dict(in_channels=3, out_channels=4, width=3, depth=1, norm="none"),
    dict(width=2, depth=3, robust_context=True),
    dict(width=2, depth=2, robust_context=True, decoder_context=True),
])
def test_load_default_model_reads_the_architecture_from_the_checkpoint(tmp_path, settings):
    torch.manual_seed(0)
    model = UNet(**settings).eval()
    path = save_checkpoint(model, tmp_path / "unet.pth")
    before = torch.get_rng_state()
    loaded = training.load_default_model(path)
    assert torch.equal(torch.get_rng_state(), before)  # its initial weights drew from a copy
    expected = dict(in_channels=1, out_channels=1, global_context=True, norm="batch",
                    robust_context=False, decoder_context=False) | settings
    assert training.unet_architecture(torch.load(path, weights_only=True)) == expected
    x = torch.rand(1, settings.get("in_channels", 1), 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="library's UNet"):
        training.unet_architecture({"weight": torch.zeros(1)})


def test_dihedral_augment_turns_image_and_target_alike():
    images = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(40, 1, 1, 1)
    targets = (images > 7).float()
    turned, turned_targets = training.dihedral_augment(images, targets,
                                                       torch.Generator().manual_seed(0))
    seen = set()
    for x, y, original, original_target in zip(turned, turned_targets, images, targets):
        matches = [k for k in range(8)
                   if torch.equal(x, torch.rot90(original, k % 4, (-2, -1)).flip(-1)
                                  if k >= 4 else torch.rot90(original, k, (-2, -1)))]
        assert len(matches) == 1  # one of the 8 symmetries of the square ...
        k = matches[0]
        expected = torch.rot90(original_target, k % 4, (-2, -1))
        assert torch.equal(y, expected.flip(-1) if k >= 4 else expected)  # ... the same for both
        seen.add(k)
    assert seen == set(range(8))


def test_classification_scores_by_hand():
    from interpret_segmentation.analysis.metrics import classification_scores

    labels = [1, 1, 1, 1, 0, 0]
    predictions = [1, 1, 1, 0, 0, 1]
    scores = classification_scores(predictions, labels)
    assert scores == {"balanced_accuracy": pytest.approx((3 / 4 + 1 / 2) / 2),
                      "tpr": pytest.approx(3 / 4), "tnr": pytest.approx(1 / 2)}
    assert np.isnan(classification_scores([0, 0], [0, 0])["tpr"])
    with pytest.raises(ValueError, match="same number"):
        classification_scores([0, 1], [0])


def test_train_a_classifier_with_parameter_groups(tmp_path):
    from interpret_segmentation.models import VGG11, vgg_parameter_groups

    torch.manual_seed(0)
    images = torch.rand(32, 1, 32, 32) * 0.2
    labels = torch.arange(32) % 2
    images[labels == 1, :, 8:16, 8:16] += 0.8  # defective: a bright square
    data = TensorDataset(images, labels)
    model = VGG11(in_channels=1, width=4, head="onefc", input_size=32)
    groups = vgg_parameter_groups(model, conv_lr=3e-3, fc_lr=1e-2)
    history = train(model, data, data, epochs=6, lr=1.0, batch_size=8, task="classification",
                    parameter_groups=groups, results_path=tmp_path / "r.txt",
                    checkpoint_dir=tmp_path / "ck", progress=False, log=lambda line: None)
    assert {"val_balanced_accuracy", "val_tpr", "val_tnr"} <= history[-1].keys()
    assert history[-1]["val_balanced_accuracy"] == 1.0
    assert "val_balanced_accuracy 1.0000" in (tmp_path / "r.txt").read_text().splitlines()[-1]
    with pytest.raises(ValueError, match="task"):
        train(model, data, data, epochs=1, lr=1e-3, batch_size=8, task="detection",
              results_path=tmp_path / "s.txt", checkpoint_dir=tmp_path / "ck", progress=False)


def test_noise_augment_adds_bounded_noise_and_keeps_targets():
    images = torch.full((200, 1, 32, 32), 0.5)
    targets = torch.rand(200, 1, 32, 32) > 0.5
    noisy, same = training.noise_augment(images, targets, torch.Generator().manual_seed(0),
                                         max_std=0.1)
    assert same is targets and noisy.shape == images.shape and noisy.dtype == images.dtype
    stds = (noisy - images).std(dim=(1, 2, 3))
    assert stds.max() < 0.1 * 1.1 and stds.min() < 0.01  # per image, uniform in [0, 0.1]
    assert abs(float(stds.mean()) - 0.05) < 0.01
    again, _ = training.noise_augment(images, targets, torch.Generator().manual_seed(0),
                                      max_std=0.1)
    assert torch.equal(noisy, again)
    clean, _ = training.noise_augment(images, targets, max_std=0.0)
    assert torch.equal(clean, images)


def test_affine_elastic_augment_moves_image_and_mask_alike():
    images = torch.zeros(6, 1, 48, 48)
    images[:, :, 10:30, 14:26] = 1.0
    masks = images > 0.5
    generator = torch.Generator().manual_seed(1)
    moved, moved_masks = training.affine_elastic_augment(images, masks, generator)
    assert moved.shape == images.shape and moved_masks.dtype == torch.bool
    assert ((moved > 0.5) != moved_masks).float().mean() < 0.01  # the mask follows its image
    assert not torch.equal(moved_masks, masks)  # and they did move
    still, still_masks = training.affine_elastic_augment(
        images, masks, generator, rotation=0.0, scale=(1.0, 1.0), shift=0.0, elastic=0.0)
    for x, y, original in zip(still, still_masks, images):  # only the random mirror is left
        assert torch.allclose(x, original, atol=1e-5) or torch.allclose(x, original.flip(-1),
                                                                          atol=1e-5)
        assert torch.equal(y, x > 0.5)


def test_train_stops_once_the_validation_target_is_held(tmp_path):
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, global_context=False)
    lines = []
    history = train(model, *_toy_sets(), epochs=30, lr=0.05, batch_size=4,
                    results_path=tmp_path / "run.txt", checkpoint_dir=tmp_path, progress=False,
                    log=lines.append, stop_at=0.9, hold=2)
    assert len(history) < 30
    assert [row["val_dice"] >= 0.9 for row in history[-3:]] == [False, True, True]
    assert "training stopped after epoch" in lines[-1]
    # an unreachable target runs every epoch
    history = train(UNet(width=4, depth=2, global_context=False), *_toy_sets(), epochs=3,
                    lr=0.05, batch_size=4, results_path=tmp_path / "run2.txt",
                    checkpoint_dir=tmp_path / "second", progress=False, log=lines.append,
                    stop_at=1.5)
    assert len(history) == 3
    assert lines[-1].startswith("val_dice ") and "after the last epoch (3), below the target 1.5" \
        in lines[-1]
    with pytest.raises(ValueError, match="hold: expected a positive int"):
        train(model, *_toy_sets(), epochs=1, lr=0.05, batch_size=4, hold=0,
              results_path=tmp_path / "r3.txt", checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="schedule: expected one of"):
        train(model, *_toy_sets(), epochs=1, lr=0.05, batch_size=4, schedule="cosine",
              results_path=tmp_path / "r4.txt", checkpoint_dir=tmp_path, progress=False)


def test_plateau_schedule_warms_up_holds_the_peak_then_decays():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=0.5)
    scheduler = _scheduler(optimizer, "plateau", 100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.05) and rates[9] == pytest.approx(0.5)  # 10 warm-up steps
    assert all(rate == pytest.approx(0.5) for rate in rates[9:50])
    assert all(a > b for a, b in zip(rates[50:], rates[51:]))
    assert 0.005 <= rates[-1] < 0.007  # towards lr / 100


def test_train_never_overwrites_a_previous_runs_epoch_checkpoints(tmp_path):
    (tmp_path / "testnet_2.pth").write_bytes(b"a previous run's")
    with pytest.raises(FileExistsError, match="testnet_2.pth already exists"):
        train(UNet(width=4, depth=2), *_toy_sets(), epochs=3, lr=0.05, batch_size=4,
              results_path=tmp_path / "run.txt", checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "testnet_2.pth").read_bytes() == b"a previous run's"
    assert not (tmp_path / "run.txt").exists()  # refused before anything was written


@pytest.mark.parametrize("robust", [False, True])
def test_robust_context_path_keeps_a_gradient_when_every_hidden_unit_is_off(robust):
    """The failure that kept demo U-Nets at "both left shapes": the context MLP's hidden ReLUs
    all off for every input, so its first layer gets no gradient. The robust path's leaky
    units (and normalised summary) still pass one."""
    from interpret_segmentation.models import GlobalContext

    torch.manual_seed(0)
    context = GlobalContext(6, robust=robust)
    with torch.no_grad():
        context.mlp[0].bias.fill_(-100.0)  # every hidden pre-activation far below zero
    features = torch.rand(4, 6, 5, 5)  # non-negative, as after a ReLU
    context(features).sum().backward()
    gradient = context.mlp[0].weight.grad.abs().sum()
    assert (gradient > 0) == robust
    assert isinstance(context.norm, torch.nn.LayerNorm) == robust


def test_decoder_context_reaches_every_decoder_level():
    """Without the bottleneck's context path, a depth-2 U-Net's far pixels still respond to a
    change 100 px away once the decoder levels are modulated by the bottleneck summary, and
    the last level's modulation moves the output at first order."""
    image = torch.zeros(1, 1, 64, 128)
    changed = image.clone()
    changed[..., 90:] = 5.0
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, global_context=False, decoder_context=True).eval()
    with torch.no_grad():
        assert (model(changed) - model(image))[..., :, :20].abs().max() > 0
    assert [level.out_features for level in model.decoder_context.levels] == [2 * 8, 2 * 4]
    model(changed).sum().backward()
    last = model.decoder_context.levels[-1].weight.grad.abs().sum()
    head = model.head.weight.grad.abs().sum()
    assert last > 0.1 * head  # a stuck bottleneck-only model's context got 1/150 of the head's


def test_sample_weights_decide_which_items_an_epoch_draws(tmp_path):
    train_set, val_set = _toy_sets()
    drawn = []

    class Recording(torch.utils.data.Dataset):
        def __len__(self):
            return len(train_set)

        def __getitem__(self, item):
            drawn.append(item)
            return train_set[item]

    weights = [1.0] * 4 + [0.0] * 12  # only the first four items may be drawn
    train(UNet(width=4, depth=2), Recording(), val_set, epochs=2, lr=0.01, batch_size=4,
          results_path=tmp_path / "run.txt", checkpoint_dir=tmp_path, progress=False,
          sample_weights=weights, log=lambda line: None)
    assert len(drawn) == 2 * 16 and set(drawn) <= {0, 1, 2, 3}
    for bad in ([1.0] * 15, [1.0] * 15 + [float("nan")], [0.0] * 16, [-1.0] + [1.0] * 15):
        with pytest.raises(ValueError, match="sample_weights: expected 16 finite"):
            train(UNet(width=4, depth=2), train_set, val_set, epochs=1, lr=0.01, batch_size=4,
                  results_path=tmp_path / "bad.txt", checkpoint_dir=tmp_path / "bad",
                  progress=False, sample_weights=bad)


def test_oversampling_weights_follow_the_right_hand_shape(tmp_path):
    root = generate_dataset(tmp_path / "d", n=20, size=48, progress=False)
    train_set, _ = training.dataset_splits(root)
    weights = training.oversampling_weights(train_set, {"square": 2.0})
    shapes = [train_set.dataset.sample(p).meta["right_shape"] for p in train_set.indices]
    assert weights == [2.0 if shape == "square" else 1.0 for shape in shapes]
    assert {1.0, 2.0} == set(weights)
    assert training.oversampling_weights(train_set, None) is None


# ---------------------------------------------------------------------------------------------
# randomness: no global generator touched, same seed same weights


def _weights_and_rows(tmp_path, name, seed, model_seed=0, **kwargs):
    with training.seeded(model_seed):
        model = UNet(width=4, depth=2)
    history = train(model, *_toy_sets(), epochs=1, lr=0.05, batch_size=4, seed=seed,
                    results_path=tmp_path / f"{name}.txt", checkpoint_dir=tmp_path / name,
                    progress=False, log=lambda line: None, **kwargs)
    rows = [{k: v for k, v in row.items() if k not in ("seconds", "checkpoint")}
            for row in history]
    return model.state_dict(), rows


@pytest.mark.parametrize("kwargs", [dict(augment=True),
                                    dict(sample_weights=[1.0, 3.0] * 8, schedule="plateau")])
def test_train_leaves_the_global_generator_alone_and_same_seed_gives_same_weights(tmp_path,
                                                                                  kwargs):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, first_rows = _weights_and_rows(tmp_path, "a", seed=5, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)  # neither reseeded nor drawn from
    second, second_rows = _weights_and_rows(tmp_path, "b", seed=5, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)  # bit for bit
    assert first_rows == second_rows
    other, _ = _weights_and_rows(tmp_path, "c", seed=6, **kwargs)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def test_train_draws_from_a_seeded_global_stream_as_manual_seed_would(tmp_path):
    """Dropout draws from the global generator: inside train() it is the stream that
    torch.manual_seed(seed) starts (the stream the recipes were validated with), whatever the
    caller's generator holds, and the caller's generator is untouched afterwards."""
    from interpret_segmentation.models import VGG11

    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(images, torch.arange(8) % 2)
    states = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        with training.seeded(0):
            model = VGG11(in_channels=1, width=2, head="128N", input_size=32, dropout=0.5)
        train(model, data, data, epochs=1, lr=1e-3, batch_size=4, seed=3, task="classification",
              results_path=tmp_path / f"{caller_seed}.txt", checkpoint_dir=tmp_path / "ck",
              checkpoint_prefix=f"run{caller_seed}", progress=False, log=lambda line: None)
        assert torch.equal(torch.get_rng_state(), before)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_seeded_draws_what_manual_seed_would_and_restores_the_caller_state():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    with training.seeded(3):
        inside = torch.rand(5)
        model = training.default_unet()
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(3)
    assert torch.equal(inside, torch.rand(5))
    torch.manual_seed(3)
    torch.rand(5)
    reference = training.default_unet()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 reference.state_dict().values()))
    torch.set_rng_state(before)
    seeded_unet = training.default_unet(seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(seeded_unet.state_dict().values(),
                                                 training.default_unet().state_dict().values()))
    with pytest.raises(ValueError, match="seed: expected an int"):
        with training.seeded(1.5):
            pass


def test_score_segmenter_does_not_draw_from_the_global_generator():
    torch.manual_seed(0)
    model = UNet(width=4, depth=2).train()
    before = torch.get_rng_state()
    scores = score_segmenter(model, _toy_sets()[1])
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training and scores["n"] == 8
    assert 0.0 <= scores["dice"] <= 1.0


# ---------------------------------------------------------------------------------------------
# tasks


class _MeanTask(training.Task):
    """Regress an image's mean: MSE loss, scored by the fraction of images within 0.1."""

    name = "mean"
    main_score = "within"

    def loss(self, outputs, targets):
        return torch.nn.functional.mse_loss(outputs.view(-1), targets.view(-1))

    def batch_results(self, outputs, targets):
        return ((outputs.view(-1) - targets.view(-1)).abs() < 0.1).tolist()

    def summarise(self, results):
        hits = [hit for batch in results for hit in batch]
        return {"within": sum(hits) / len(hits)}


def test_a_task_of_ones_own_trains_scores_and_stops(tmp_path):
    images = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(images, images.mean(dim=(1, 2, 3)))
    with training.seeded(0):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
    lines = []
    history = train(model, data, data, epochs=40, lr=0.05, batch_size=8, task=_MeanTask(),
                    results_path=tmp_path / "r.txt", checkpoint_dir=tmp_path, progress=False,
                    log=lines.append, stop_at=1.0, hold=2, channels_last=False)
    assert {"val_loss", "val_within"} <= history[-1].keys()
    assert [row["val_within"] for row in history[-2:]] == [1.0, 1.0] and len(history) < 40
    assert "val_within at least 1 for 2 epochs" in lines[-1]
    # the scores agree with a plain loop over the items
    scores = _MeanTask().score(model, data, batch_size=5)
    with torch.no_grad():
        errors = [float(model(x[None]).view(())) - float(y) for x, y in data]
    assert scores["n"] == 32
    assert scores["loss"] == pytest.approx(np.mean(np.square(errors)), rel=1e-5)
    assert scores["within"] == np.mean(np.abs(errors) < 0.1)


def test_segmentation_task_scores_by_hand():
    """Two images of 2 x 2: a perfect prediction and one missing a pixel of two."""
    logits = torch.tensor([[[[5.0, -5.0], [-5.0, 5.0]]], [[[5.0, -5.0], [-5.0, -5.0]]]])
    segments = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 0.0], [0.0, 1.0]]]])
    task = training.SegmentationTask()
    summary = task.summarise([task.batch_results(logits, segments)])
    assert summary["dice"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert summary["hausdorff"] == pytest.approx((0.0 + 2 ** 0.5) / 2)
    assert task.summed_loss(logits, segments) == pytest.approx(
        2 * float(segmentation_loss(logits, segments)))
    with pytest.raises(ValueError, match=r"model: expected one-channel segmentation logits"):
        task.loss(torch.zeros(2, 2, 2, 2), segments)
    with pytest.raises(ValueError, match=r"model: expected class logits \(B, K\)"):
        training.ClassificationTask().loss(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))


def test_train_refuses_bad_arguments_before_writing_anything(tmp_path):
    model = UNet(width=4, depth=2)
    common = dict(epochs=1, lr=0.05, batch_size=4, results_path=tmp_path / "r.txt",
                  checkpoint_dir=tmp_path / "ck", progress=False)
    for bad, error, message in [
        (dict(task="detection"), ValueError, "task: expected one of segmentation, classification"),
        (dict(task=3), TypeError, "task: expected one of"),
        (dict(augment="dihedral"), TypeError, "augment: expected a bool or a callable"),
        (dict(seed=0.5), ValueError, "seed: expected an int"),
        (dict(num_threads=0), ValueError, "num_threads: expected a positive int"),
        (dict(checkpoint_prefix="a/b"), ValueError, "checkpoint_prefix: expected a plain file"),
        (dict(lr=float("nan")), ValueError, "lr: expected a positive number"),
        (dict(device="nonsense"), ValueError, "device: expected a torch device"),
    ]:
        with pytest.raises(error, match=message):
            train(model, *_toy_sets(), **(common | bad))
    assert not (tmp_path / "r.txt").exists() and not (tmp_path / "ck").exists()
    with pytest.raises(ValueError, match="train_set: expected at least one sample"):
        train(model, TensorDataset(torch.zeros(0, 1, 4, 4), torch.zeros(0, 1, 4, 4)),
              _toy_sets()[1], **common)


def test_train_leaves_the_model_in_eval_mode_and_the_threads_as_they_were_after_an_error(
        tmp_path):
    class Wrong(torch.nn.Module):  # two output channels: refused by the segmentation loss
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return self.conv(x)

    model = Wrong().train()
    threads = torch.get_num_threads()
    before = torch.get_rng_state()
    with pytest.raises(ValueError, match="one-channel segmentation logits"):
        train(model, *_toy_sets(), epochs=1, lr=0.05, batch_size=4, num_threads=1,
              results_path=tmp_path / "r.txt", checkpoint_dir=tmp_path, progress=False)
    assert not model.training and torch.get_num_threads() == threads
    assert model.conv.weight.is_contiguous()
    assert torch.equal(torch.get_rng_state(), before)


def test_save_checkpoint_can_refuse_to_overwrite(tmp_path):
    model = torch.nn.Linear(2, 1)
    path = save_checkpoint(model, tmp_path / "m.pth", overwrite=False)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_checkpoint(torch.nn.Linear(2, 1), path, overwrite=False)
    assert path.read_bytes() == before
    save_checkpoint(torch.nn.Linear(2, 1), path)  # the default replaces it
    assert path.read_bytes() != before


def test_train_never_writes_through_a_linked_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    model = UNet(width=4, depth=2, global_context=False)
    for results, checkpoints in [(tmp_path / "linked" / "run.txt", tmp_path / "ck"),
                                 (tmp_path / "run.txt", tmp_path / "linked")]:
        with pytest.raises(ValueError, match="is a symbolic link; training writes only into "
                                             "real directories"):
            train(model, *_toy_sets(), epochs=1, lr=0.05, batch_size=4, progress=False,
                  results_path=results, checkpoint_dir=checkpoints)
    assert not any(real.iterdir()) and not (tmp_path / "ck").exists()
