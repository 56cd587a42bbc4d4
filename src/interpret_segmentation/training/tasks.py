"""What :func:`~interpret_segmentation.training.train` fits: a task is a loss and a scorer.

:class:`SegmentationTask` trains one-channel segmentation models (BCE-with-logits + soft Dice,
scored by Dice and Hausdorff distance); :class:`ClassificationTask` trains classifiers
(cross-entropy, scored by balanced accuracy, TPR and TNR). A new kind of model is trained by
subclassing :class:`Task`; the loop itself knows nothing of either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..analysis.metrics import classification_scores, dice, hausdorff_distance
from ..core.model import evaluation_mode
from ..core.validate import check_choice, check_device, check_positive

__all__ = [
    "Task",
    "SegmentationTask",
    "ClassificationTask",
    "TASKS",
    "task_named",
    "segmentation_loss",
    "score_segmenter",
    "score_classifier",
]


class Task(ABC):
    """A training objective: the loss of a batch and the scores of a validation set.

    Subclasses set :attr:`name` and :attr:`main_score` and implement :meth:`loss`,
    :meth:`batch_results` and :meth:`summarise`; :meth:`score` and the training loop do the
    rest.
    """

    name: str = ""
    """Short name, e.g. ``"segmentation"``."""
    main_score: str = ""
    """The score (a key of :meth:`summarise`'s dict) that ``train(stop_at=...)`` watches."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of one batch, a tensor () to back-propagate.

        Raises ValueError when ``outputs`` do not fit the task (e.g. the wrong shape).
        """

    def summed_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The loss of one batch summed over its items (for the mean over a data set)."""
        return float(self.loss(outputs, targets)) * len(outputs)

    @abstractmethod
    def batch_results(self, outputs: torch.Tensor, targets: torch.Tensor):
        """What :meth:`summarise` needs from one validation batch (any value)."""

    @abstractmethod
    def summarise(self, results: list) -> dict:
        """The scores (name -> float) from the :meth:`batch_results` of every batch."""

    def score(self, model: nn.Module, dataset: Dataset, batch_size: int = 16,
              device=None) -> dict:
        """Mean loss and scores of ``model`` on ``dataset``, items ``(input, target)``.

        The model's training mode is restored afterwards; torch's global random generator is
        left as it was (the data loader draws from a forked copy).

        Returns
        -------
        dict
            ``loss`` (mean over the items), the scores of :meth:`summarise`, and ``n``.

        Raises
        ------
        ValueError
            For an empty ``dataset``, a bad ``batch_size`` or ``device``, or outputs that do not
            fit the task.
        """
        with torch.random.fork_rng(devices=[]):
            return validation_scores(self, model, dataset, batch_size, device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def validation_scores(task: Task, model: nn.Module, dataset: Dataset, batch_size: int,
                      device) -> dict:
    """:meth:`Task.score` without forking the global generator: the data loader draws one
    number from it, as in every epoch of :func:`~interpret_segmentation.training.train`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check_positive(batch_size, "batch_size")
    device = torch.device("cpu") if device is None else check_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    total, count, results = 0.0, 0, []
    with evaluation_mode(model), torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            total += task.summed_loss(outputs, targets)
            count += len(inputs)
            results.append(task.batch_results(outputs, targets))
    if count == 0:
        raise ValueError("dataset: expected at least one validation sample, got an empty set")
    return {"loss": total / count, **task.summarise(results), "n": count}


# ---------------------------------------------------------------------------------------------
# segmentation


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits plus soft Dice loss ``1 - Dice(sigmoid(logits), target)``.

    Parameters
    ----------
    logits : tensor (B, 1, H, W)
    target : tensor (B, 1, H, W) of 0/1

    Returns
    -------
    tensor ()
        Mean BCE over pixels plus the mean over the batch of the per-image soft Dice loss.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    soft_dice = (2.0 * (prob * flat).sum(1) + 1.0) / (prob.sum(1) + flat.sum(1) + 1.0)
    return bce + (1.0 - soft_dice).mean()


class SegmentationTask(Task):
    """One-channel segmentation: logits (B, 1, H, W) against segments (B, 1, H, W) of 0/1.

    Loss: :func:`segmentation_loss` (BCE-with-logits + soft Dice). Scores: ``dice`` and
    ``hausdorff`` (means over the images) of the prediction ``sigmoid(logits) > 0.5``, from
    :mod:`interpret_segmentation.analysis.metrics` (an empty prediction against a non-empty
    segment counts as the image diagonal). Training stops on ``dice``.
    """

    name = "segmentation"
    main_score = "dice"

    def loss(self, outputs, targets):
        if outputs.shape != targets.shape or outputs.ndim != 4 or outputs.shape[1] != 1:
            raise ValueError(
                "model: expected one-channel segmentation logits (B, 1, H, W) matching the "
                f"target; got output {tuple(outputs.shape)} for target {tuple(targets.shape)}")
        return segmentation_loss(outputs, targets)

    def batch_results(self, outputs, targets):
        predicted = (outputs > 0).cpu().numpy()[:, 0]  # sigmoid > 0.5
        reference = targets.cpu().numpy()[:, 0] > 0.5
        return [(dice(p, r), hausdorff_distance(p, r))
                for p, r in zip(predicted, reference, strict=True)]

    def summarise(self, results):
        pairs = [pair for batch in results for pair in batch]
        return {"dice": float(np.mean([d for d, _ in pairs])),
                "hausdorff": float(np.mean([h for _, h in pairs]))}


# ---------------------------------------------------------------------------------------------
# classification


def _labels(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``targets`` as class indices (B,), after checking ``outputs`` are class logits (B, K)."""
    labels = targets.long().view(-1)
    if outputs.ndim != 2 or len(outputs) != len(labels):
        raise ValueError(f"model: expected class logits (B, K) for {len(labels)} labels, got "
                         f"output {tuple(outputs.shape)}")
    return labels


class ClassificationTask(Task):
    """Classification: class logits (B, K) against labels (B,) (or (B, 1)).

    Loss: cross-entropy. Scores: ``balanced_accuracy``, ``tpr`` and ``tnr`` of the arg-max
    prediction, class 1 positive (see
    :func:`~interpret_segmentation.analysis.metrics.classification_scores`). Training stops on
    ``balanced_accuracy``.
    """

    name = "classification"
    main_score = "balanced_accuracy"

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs, _labels(outputs, targets))

    def summed_loss(self, outputs, targets):
        return float(F.cross_entropy(outputs, _labels(outputs, targets), reduction="sum"))

    def batch_results(self, outputs, targets):
        return outputs.argmax(1).cpu(), _labels(outputs, targets).cpu()

    def summarise(self, results):
        predictions, labels = zip(*results)
        return classification_scores(torch.cat(predictions), torch.cat(labels))


TASKS = {"segmentation": SegmentationTask, "classification": ClassificationTask}
"""The tasks :func:`~interpret_segmentation.training.train` knows by name."""


def task_named(task) -> Task:
    """``task`` as a :class:`Task`: one of :data:`TASKS` by name, or a Task as is.

    Raises ValueError for an unknown name and TypeError for anything else.
    """
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        return TASKS[check_choice(task, "task", TASKS)]()
    raise TypeError(f"task: expected one of {', '.join(TASKS)} or a Task, got "
                    f"{type(task).__name__}")


def score_segmenter(model: nn.Module, dataset: Dataset, batch_size: int = 16, device=None) -> dict:
    """Mean loss, Dice and Hausdorff distance of a segmentation model on ``dataset``.

    :meth:`SegmentationTask.score`: items ``(image, segment (1, H, W) of 0/1)``; the prediction
    is ``sigmoid(logits) > 0.5``. The model's training mode is restored afterwards.

    Returns
    -------
    dict
        ``loss``, ``dice``, ``hausdorff`` (means over the images) and ``n``.
    """
    return SegmentationTask().score(model, dataset, batch_size, device)


def score_classifier(model: nn.Module, dataset: Dataset, batch_size: int = 16,
                        device=None) -> dict:
    """Mean cross-entropy, balanced accuracy, TPR and TNR of a classifier on ``dataset``.

    :meth:`ClassificationTask.score`: items ``(image, label)``; the prediction is the arg-max
    logit; class 1 is positive. The model's training mode is restored afterwards.

    Returns
    -------
    dict
        ``loss``, ``balanced_accuracy``, ``tpr``, ``tnr`` and ``n``.
    """
    return ClassificationTask().score(model, dataset, batch_size, device)
