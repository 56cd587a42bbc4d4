"""Seed 003's study in the paper's setting: the label budget, the coarse pixel labels and the
LRP options the study uses (the end-to-end run is in test_reproduce.py)."""

import numpy as np
import pytest
from torch import nn

from interpret_segmentation.datasets.defects import (
    defect_kind,
    defect_split,
    generate_defect_dataset,
    generate_defect_sample,
)
from interpret_segmentation.methods.lrp import Epsilon, MaxPool, ZBox
from interpret_segmentation.studies.reproduce import lrp
from interpret_segmentation.studies.reproduce.common import Run


def test_pixel_labels_go_to_60_and_119_defective_training_images():
    train = defect_split(600)[0]
    small, large = lrp.pixel_label_budget(train, 60), lrp.pixel_label_budget(train, 119)
    assert (len(small), len(large)) == (60, 119)
    assert set(small) <= set(large) <= set(train)  # the 60 are among the 119
    assert small == sorted(small) and len(set(large)) == 119
    kinds = [defect_kind(i) for i in large]
    assert "none" not in kinds and abs(kinds.count("crack") - kinds.count("blowhole")) <= 1
    assert [defect_kind(i) for i in small].count("crack") == 30
    # the classifiers' training part holds many more images, half of them defect-free
    assert len(train) == 360 and sum(defect_kind(i) != "none" for i in train) == 180
    with pytest.raises(ValueError, match="^budget: expected at most the 180 defective"):
        lrp.pixel_label_budget(train, 181)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("lrp") / "data"
    return generate_defect_dataset(root, n=40, seed=3, size=64, progress=False)


def _recording_run(tmp_path, monkeypatch, **settings):
    """A Run whose fit records what it would train on instead of training."""
    calls = []
    monkeypatch.setattr(Run, "fit", lambda self, model, name, train_set, val_set, **options:
                        calls.append((name, train_set, val_set, options)))
    base = dict(lrp.SETTINGS["quick"], n=40, size=64, width=2)
    return Run(tmp_path, {**base, **settings}, True, 3, False, lambda line: None), calls


def test_unets_learn_from_coarse_labels_of_their_budget_only(tmp_path, monkeypatch, tiny_set):
    run, calls = _recording_run(tmp_path, monkeypatch, unet_steps=12, batch_size=4)
    split = defect_split(40)
    lrp._train_unet(run, tiny_set, split, 6)
    ((name, train_set, val_set, options),) = calls
    assert name == "unet_6" and options["epochs"] == 8  # 12 steps of 4 images over 6 images
    assert train_set.indices == lrp.pixel_label_budget(split[0], 6)
    assert val_set.indices == [i for i in split[1] if defect_kind(i) != "none"]
    for dataset in (train_set, val_set):
        assert not dataset.labels and dataset.annotation
    image, target = train_set[0]
    sample = generate_defect_sample(3, train_set.indices[0], 64)
    np.testing.assert_array_equal(target[0].numpy() > 0.5, sample.annotation)  # not the segment
    assert target.sum() > sample.segment.sum()


def test_classifiers_learn_from_image_labels_of_the_whole_training_part(tmp_path, monkeypatch,
                                                                        tiny_set):
    run, calls = _recording_run(tmp_path, monkeypatch)
    split = defect_split(40)
    lrp._train_classifiers(run, tiny_set, split)
    assert [call[0] for call in calls] == ["vgg_onefc", "vgg_128N"]
    for _, train_set, val_set, options in calls:
        assert train_set.indices == split[0] and val_set.indices == split[1]
        assert options["task"] == "classification"
        labels = [int(label) for _, label in train_set]
        assert labels.count(0) == labels.count(1) == len(split[0]) // 2


def test_test_images_are_scored_against_the_true_defects(tiny_set):
    split = defect_split(40)
    test = lrp._test_data(tiny_set, split[2])
    assert test["images"].shape == (len(split[2]), 1, 64, 64)
    assert test["defective"] == [k for k, i in enumerate(split[2]) if defect_kind(i) != "none"]
    for index, truth, annotation in zip(split[2], test["truths"], test["annotations"]):
        sample = generate_defect_sample(3, index, 64)
        np.testing.assert_array_equal(truth, sample.segment)
        np.testing.assert_array_equal(annotation, sample.annotation)
    scores = lrp._pooled_scores(test["annotations"], test["truths"])  # annotations as masks
    assert scores["recall"] == 1.0 and scores["precision"] < 0.9
    # every test image counts: a mask on a defect-free image is all false positives
    free = next(k for k in range(len(split[2])) if k not in test["defective"])
    noisy = [t.copy() for t in test["truths"]]
    noisy[free][:8, :8] = True
    worse = lrp._pooled_scores(noisy, test["truths"])
    assert worse["recall"] == 1.0 and worse["precision"] == pytest.approx(
        sum(t.sum() for t in test["truths"]) / (sum(t.sum() for t in test["truths"]) + 64))


def test_the_study_reads_lrp_in_every_way_the_paper_allows():
    rule_sets = lrp.study_rule_sets()
    assert set(rule_sets) == {f"{base}{eps}{pool}" for base in ("montavon", "seibold")
                              for eps in ("", "-rms") for pool in ("", "-avgpool")}
    for name, rules in rule_sets.items():
        first = rules["conv1_1"]
        assert isinstance(first, ZBox) and (first.low, first.high) == (0.0, 1.0)
        epsilons = [rule for rule in rules.values() if isinstance(rule, Epsilon)]
        assert epsilons and all(e.spread == ("rms" if "-rms" in name else "std") for e in epsilons)
        pooling = rules.get(nn.MaxPool2d, MaxPool("winner"))
        assert pooling.mode == ("average" if name.endswith("-avgpool") else "winner")
