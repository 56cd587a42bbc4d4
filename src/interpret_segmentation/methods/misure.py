"""MiSuRe: the sufficient region and the minimally sufficient region of a segment (seed 001).

Stage 1 (Algorithm 1). Start from the class's target pixels M0, keep only those pixels or
voxels of the image (X_m = replace(X0, M0, baseline): removed ones take the baseline, 0 by
default, the paper's X0 * M0) and compare the class's segment on X_m with its segment on X0 by
Dice. While the Dice is at most ``tau``, dilate the mask with a disk (images) or a ball
(volumes) of diameter ``kernel_size``. The result is the sufficient region: mask M_SR, image
X_SR = replace(X0, M_SR, baseline), number of dilations.

Stage 2 (Eq. 1). Optimise a one-channel mask M of ``mask_size`` per spatial axis, initialised
from M_SR and resized to the image (bilinearly, trilinearly for volumes), to minimise

    lambda * mean|M| + gamma * TV_beta(M)
    + 1 - alpha_background * softDice(B(X_SR * M), B(X0)) - alpha_class * softDice(P_l, R_l)

with AdamW; after each step values below ``zero_below`` become 0 and values above 1 become 1.
For softmax classes (and one-channel models) B is class 0, the background, as in the paper;
the term is left out when l = 0. A multi-label head (one sigmoid per channel) has no
background class: there B is the complement 1 - p_l of channel l (which is what class 0 is
for a one-channel model), kept for every l. The result is the minimally sufficient region
M_MSR and X_MSR = replace(X_SR, M_MSR, baseline). The paper gives no gamma or beta; here
TV_beta is the mean over pixels (voxels) of the sum over spatial axes of |dM/dx_i|^beta with
beta = 3 (as Fong and Vedaldi's meaningful perturbations) and gamma = 0.05, a mild smoothing.

Several images, or several classes of one image, are optimised in one batch with
:meth:`MiSuRe.explain_batch`; each item's loss and optimiser state are its own, so the result is
that of explaining them one at a time.

The module's parts: :func:`ball_kernel` and :func:`dilate` (dimension-generic binary
dilation), :class:`DilationSteps` (stage 1's masks, built on demand) and :func:`stop_reason`
(when stage 1 ends); :func:`mask_loss` (stage 2's loss) with :func:`soft_dice` and
:func:`total_variation`; :class:`MiSuRe` holds the configuration and runs the stages
(:meth:`MiSuRe.sufficient_region`, :meth:`MiSuRe.minimally_sufficient`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..analysis.metrics import batch_dice
from ..core import Explainer, Explanation, Item
from ..core.baseline import replace
from ..core.validate import check_finite, check_number, check_per_axis, check_positive, is_int

DEFAULT_MASK_SIDE = 224
"""Seed 001's mask side: the default ``mask_size`` of images, the cap of volumes' default."""

CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def ball_kernel(size: int, spatial_dims: int = 2) -> torch.Tensor:
    """A digital ball of diameter ``size`` (odd): 0/1 floats of shape (size,) * spatial_dims.

    The offsets within Euclidean distance ``size // 2`` of the centre: a disk for images, a
    ball for volumes.
    """
    radius = size // 2
    offsets = torch.arange(size, dtype=torch.float32) - radius
    squared = torch.zeros((1,) * spatial_dims)
    for axis in range(spatial_dims):
        shape = [1] * spatial_dims
        shape[axis] = size
        squared = squared + offsets.reshape(shape) ** 2
    return (squared <= radius ** 2 + 1e-6).float()


def disk_kernel(size: int) -> torch.Tensor:
    """A circular structuring element (size, size) of 0/1 floats: :func:`ball_kernel` in 2-D."""
    return ball_kernel(size, 2)


def dilate(masks: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Binary dilation of masks (B, 1, *S) (0/1 floats) with ``kernel`` (k,) * len(S).

    A convolution with the kernel, thresholded: exact for 0/1 masks in 1, 2 or 3 spatial
    dimensions; pixels outside the image count as 0.
    """
    pad = kernel.shape[-1] // 2
    grown = CONVOLUTIONS[kernel.ndim](masks, kernel[None, None].to(masks), padding=pad)
    return (grown > 0.5).to(masks.dtype)


def soft_dice(predicted: torch.Tensor, reference: torch.Tensor, epsilon: float = 1.0) -> torch.Tensor:
    """Soft Dice per item between maps (B, *S): (2 sum(p q) + eps) / (sum p + sum q + eps)."""
    predicted, reference = predicted.flatten(1), reference.flatten(1)
    return ((2 * (predicted * reference).sum(1) + epsilon)
            / (predicted.sum(1) + reference.sum(1) + epsilon))


def total_variation(masks: torch.Tensor, beta: float) -> torch.Tensor:
    """Per item, the mean over pixels (voxels) of sum_i |dM/dx_i|^beta for masks (B, 1, *s).

    Forward differences along every spatial axis; (B,).
    """
    total = torch.zeros(masks.shape[0], dtype=masks.dtype, device=masks.device)
    for axis in range(2, masks.ndim):
        length = masks.shape[axis]
        jumps = masks.narrow(axis, 1, length - 1) - masks.narrow(axis, 0, length - 1)
        total = total + jumps.abs().pow(beta).flatten(1).sum(1)
    return total / math.prod(masks.shape[2:])


def resized(masks: torch.Tensor, size) -> torch.Tensor:
    """Masks (B, 1, *s) resized to ``size`` (one int per spatial axis), bilinearly for images
    and trilinearly for volumes."""
    return F.interpolate(masks, size=tuple(size), mode=INTERPOLATION[masks.ndim - 2],
                         align_corners=False)


# -- stage 1: the sufficient region ---------------------------------------------------------

class DilationSteps:
    """Stage 1's masks: step 0 is M0, step s + 1 the dilation of step s; built on demand.

    Only a few masks are kept (M0, and the first and last of the latest request), so memory
    does not grow with the number of steps; a request may repeat the latest one (as a batch
    retried after an out-of-memory error does) or continue where it ended.

    Parameters
    ----------
    start : Tensor (*S)
        M0, bool or 0/1, (H, W) or (D, H, W).
    kernel : Tensor (k,) * len(S)
        The structuring element (:func:`ball_kernel`).
    """

    def __init__(self, start: torch.Tensor, kernel: torch.Tensor):
        if kernel.ndim != start.ndim:
            raise ValueError(f"kernel: expected {start.ndim} spatial axes as the mask has, got "
                             f"shape {tuple(kernel.shape)}")
        self.kernel = kernel
        self._known = {0: start.to(torch.float32)[None, None]}

    @property
    def count(self) -> int:
        """An upper bound on the steps before a non-empty M0 covers the image or stops growing.

        A digital ball of radius r >= 1 holds the L1 ball of radius r (|v|_2 <= |v|_1), and n
        L1 balls of radius r add up to the L1 ball of radius n r on the grid, reached through
        voxels between the two ends (so inside the image). No voxel is farther than
        sum_i (S_i - 1) from M0 in L1 distance: steps 0 .. ceil(sum_i (S_i - 1) / r). A kernel
        of radius 0 never grows the mask (step 0 ends it); it is counted as radius 1.
        """
        farthest = sum(side - 1 for side in self._known[0].shape[2:])
        radius = max(self.kernel.shape[-1] // 2, 1)
        return math.ceil(farthest / radius) + 1

    def masks(self, start: int, stop: int) -> torch.Tensor:
        """The masks of steps ``start`` .. ``stop``, both included: (stop - start + 1, 1, *S).

        The mask after the last one asked for comes with them, so the caller can see whether
        a step still grows the mask.
        """
        step = max(known for known in self._known if known <= start)
        mask = self._known[step]
        for _ in range(start - step):
            mask = dilate(mask, self.kernel)
        steps = [mask]
        for _ in range(stop - start):
            steps.append(dilate(steps[-1], self.kernel))
        self._known = {0: self._known[0], start: steps[0], stop: steps[-1]}
        return torch.cat(steps)


def stop_reason(mask, dice: float, grows: bool, tau: float) -> str | None:
    """Why stage 1 ends at a step, or None to go on.

    "covers_image" when ``mask`` (the step's mask, or whether it covers the image) covers the
    image, else "tau" when ``dice`` > ``tau``, else "no_growth" when the next dilation leaves
    the mask as it is (no later step could differ).
    """
    if bool(mask.all() if isinstance(mask, torch.Tensor) else mask):
        return "covers_image"
    if dice > tau:
        return "tau"
    if not grows:
        return "no_growth"
    return None


@dataclass(frozen=True)
class SufficientRegion:
    """Stage 1's result for one item: M_SR (*S) 0/1 floats, the number of dilations from M0,
    the Dice between the class's segment on X_SR and on X0, why it ended (:func:`stop_reason`),
    the inputs it ran through the model and its batch size."""

    mask: torch.Tensor
    dilations: int
    dice: float
    stop: str
    passes: int
    batch_size: int


# -- stage 2: the minimally sufficient region -----------------------------------------------

def mask_loss(mask: torch.Tensor, probabilities: torch.Tensor, reference: torch.Tensor,
              classes: torch.Tensor, *, lam: float, gamma: float, beta: float,
              alpha_background: float, alpha_class: float,
              multilabel: bool = False) -> torch.Tensor:
    """Stage 2's loss per item (Eq. 1 of seed 001).

    lam * mean|M| + gamma * TV_beta(M) + 1 - alpha_background * softDice(B(P), B(R))
    - alpha_class * softDice(P_l, R_l), where P are the probabilities on the masked image and
    R those on X0. B is class 0 (the background) for softmax classes, left out when l = 0 so
    that the class counts once; for a multi-label head B is the complement 1 - P_l of the
    class's own channel (class 0 of a one-channel model is exactly that).

    Parameters
    ----------
    mask : Tensor (B, 1, *s)
        The optimised masks at their own size.
    probabilities, reference : Tensor (B, K, *S)
    classes : Tensor (B,) int64
        Class (or label channel) l of each item.
    multilabel : bool, default False
        Whether the K channels are independent sigmoid labels.

    Returns
    -------
    Tensor (B,)
    """
    rows = torch.arange(len(classes), device=probabilities.device)
    chosen, expected = probabilities[rows, classes], reference[rows, classes]
    dice_class = soft_dice(chosen, expected)
    if multilabel:
        dice_background = soft_dice(1 - chosen, 1 - expected)
    else:
        dice_background = soft_dice(probabilities[:, 0], reference[:, 0])
        dice_background = torch.where(classes == 0, torch.zeros_like(dice_background),
                                      dice_background)
    return (lam * mask.abs().flatten(1).mean(1) + gamma * total_variation(mask, beta)
            + 1 - alpha_background * dice_background - alpha_class * dice_class)


def _mask_size_given(mask_size):
    """``mask_size`` checked without the image: None, a positive int, or 2 or 3 of them."""
    if mask_size is None:
        return None
    if isinstance(mask_size, (tuple, list, np.ndarray, torch.Tensor)):
        axes = len(mask_size)
        if axes not in (2, 3):
            raise ValueError(f"mask_size: expected a positive int or one per spatial axis (2 for "
                             f"images, 3 for volumes), got {axes} values: {mask_size!r}")
        return check_per_axis(mask_size, "mask_size", axes)
    return check_positive(mask_size, "mask_size")


class MiSuRe(Explainer):
    """Sufficient and minimally sufficient regions (seed 001, sections 3.1 and 4.2).

    Parameters
    ----------
    model : nn.Module or callable
    tau : float, default 0.9
        Stage 1 dilates while Dice(segment on X0, segment on X_m) <= tau; in (0, 1].
    kernel_size : int, default 7
        Diameter in pixels (voxels) of the disk (ball for volumes) the mask is dilated with:
        odd and at least 3 (a 1 x 1 kernel would never grow the mask).
    mask_size : int, sequence of int or None, default None
        Size of the optimised mask per spatial axis (one int for every axis, or one per
        axis); it is resized to the image bilinearly (trilinearly). None: 224 x 224 for
        images (seed 001's), and for volumes the volume's own size per axis, at most 224 (a
        224^3 mask would be 11 M parameters, most of them never read at a 64^3 volume).
    iterations : int, default 100
    lr : float, default 0.1
        AdamW learning rate.
    lam : float, default 0.01
        Weight of mean|M| (lambda).
    gamma : float, default 0.05
        Weight of the total variation (not given by the paper).
    beta : float, default 3.0
        Exponent of the total variation (not given by the paper).
    alpha_background, alpha_class : float, default 1.0 and 2.0
        Weights of the background and class-l soft Dice terms (the background is class 0
        for softmax classes, the complement of channel l for a multi-label head).
    zero_below : float, default 0.2
        After each step mask values below it become 0 (values above 1 become 1).
    spatial_dims, spacing, baseline, output, activation, read, device, batch_size, progress, ...
        As for every explainer. Removed pixels take ``baseline`` (default 0.0: the paper's
        multiplication by the mask). Stage 1's dilation steps run ``batch_size`` per model
        pass (the last pass may hold steps after the one that ends it); stage 2 runs all
        items of :meth:`explain_batch` in one pass per iteration. The result does not depend
        on ``batch_size``. With ``progress``, each stage shows a bar on stderr.

    The Explanation's ``saliency`` (*S) is M_MSR. ``arrays`` holds "sr_mask", "msr_mask" (*S)
    and "x_sr", "x_msr" (C, *S); ``info`` "dilations", "sr_covers_image", "sr_stop" (why stage
    1 ended: "tau", "covers_image" or "no_growth"), "sr_dice", "dice_explained" (Dice between
    the class's segment on X_MSR and on X0), "perturbation_ratio" (non-zero M_MSR voxels per
    segment voxel), "mask_size" (the optimised mask's shape), "stage1_passes" (dilation
    steps run), "model_passes" (inputs run for the item: X0, stage 1's steps, stage 2's
    iterations and X_MSR), "batch_size" (stage 1's) and "nothing_to_explain"; ``timings``
    "stage1", "stage2" and "total".
    """

    method = "misure"

    def __init__(self, model, tau: float = 0.9, kernel_size: int = 7, mask_size=None,
                 iterations: int = 100, lr: float = 0.1, lam: float = 0.01, gamma: float = 0.05,
                 beta: float = 3.0, alpha_background: float = 1.0, alpha_class: float = 2.0,
                 zero_below: float = 0.2, **options):
        super().__init__(model, **options)
        self.tau = check_number(tau, "tau", 0, 1, open_low=True)
        if not is_int(kernel_size) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd int >= 3 (a 1 x 1 kernel never grows "
                             f"the mask), got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.mask_size = _mask_size_given(mask_size)
        self.iterations = check_positive(iterations, "iterations")
        self.lr = check_positive(lr, "lr", float)
        self.lam, self.gamma = check_number(lam, "lam", 0), check_number(gamma, "gamma", 0)
        self.alpha_background = check_number(alpha_background, "alpha_background", 0)
        self.alpha_class = check_number(alpha_class, "alpha_class", 0)
        self.beta = check_positive(beta, "beta", float)
        self.zero_below = check_number(zero_below, "zero_below", 0, 1, open_high=True)

    def settings(self) -> dict:
        """The method's parameters, as recorded in each Explanation."""
        mask_size = list(self.mask_size) if isinstance(self.mask_size, tuple) else self.mask_size
        return {"tau": self.tau, "kernel_size": self.kernel_size, "mask_size": mask_size,
                "iterations": self.iterations, "lr": self.lr, **self.loss_weights(),
                "zero_below": self.zero_below}

    def loss_weights(self) -> dict:
        """The keyword arguments of :func:`mask_loss` (its ``multilabel`` from the model)."""
        return {"lam": self.lam, "gamma": self.gamma, "beta": self.beta,
                "alpha_background": self.alpha_background, "alpha_class": self.alpha_class}

    def mask_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The optimised mask's shape for an image or volume of spatial shape ``spatial``."""
        if self.mask_size is None:
            if len(spatial) == 2:
                return (DEFAULT_MASK_SIDE,) * 2
            return tuple(min(side, DEFAULT_MASK_SIDE) for side in spatial)
        if isinstance(self.mask_size, tuple):
            if len(self.mask_size) != len(spatial):
                raise ValueError(
                    f"mask_size: expected an int or {len(spatial)} ints (one per spatial axis of "
                    f"the {'volume' if len(spatial) == 3 else 'image'} {tuple(spatial)}), got "
                    f"{self.mask_size}")
            return self.mask_size
        return (self.mask_size,) * len(spatial)

    def segment(self, probabilities: torch.Tensor, class_index: int) -> torch.Tensor:
        """The class's segment, bool (B, *S), by the model's one definition."""
        return self.model.segment(probabilities, class_index)

    def _explain_items(self, items: list[Item]) -> list[Explanation]:
        """Stage 1 per item, then stage 2 for all items that have something to explain."""
        self.mask_shape(tuple(items[0].image.shape[2:]))  # a wrong mask_size fails first
        started = time.perf_counter()
        regions = [self.sufficient_region(item) if item.target.pixels.any() else None
                   for item in items]
        between = time.perf_counter()
        todo = [i for i, region in enumerate(regions) if region is not None]
        masks = self.minimally_sufficient([items[i] for i in todo],
                                          [regions[i].mask for i in todo]) if todo else []
        msr_masks = dict(zip(todo, masks))
        timings = {"stage1": (between - started) / len(items),
                   "stage2": (time.perf_counter() - between) / len(items)}
        return [self._result(item, regions[i], msr_masks[i], dict(timings)) if i in msr_masks
                else self._nothing_to_explain(item, dict(timings))
                for i, item in enumerate(items)]

    def sufficient_region(self, item: Item) -> SufficientRegion:
        """Stage 1 for one item whose target pixels (M0) are not empty.

        The dilation steps run through :meth:`perturbations`, ``batch_size`` per model pass;
        the first step that ends stage 1 (:func:`stop_reason`) wins, exactly as a loop of one
        step per pass would find it. Every step grows the mask or ends stage 1, so it ends
        within :attr:`DilationSteps.count` steps.
        """
        image, class_index = item.image, item.target.class_index
        reference = self.segment(item.probabilities, class_index)[0]
        spatial_dims = image.ndim - 2
        steps = DilationSteps(item.target.pixels.to(image.device),
                              ball_kernel(self.kernel_size, spatial_dims).to(image.device))

        def make(start: int, stop: int):
            masks = steps.masks(start, stop)
            # whether each step covers the image and whether the next one grows it, kept on
            # the device: read with the batch's Dice, one transfer per batch
            flags = torch.stack([masks[:-1].flatten(1).all(1),
                                 (masks[1:] != masks[:-1]).flatten(1).any(1)])
            return (masks[:-1], flags), replace(image, masks[:-1].to(image.dtype), item.baseline)

        run = self.perturbations(steps.count, make, "MiSuRe stage 1 dilations")
        step = 0
        for (masks, flags), probabilities in run:
            scores = batch_dice(self.segment(probabilities, class_index), reference)
            scores, covers, grows = torch.cat([scores[None], flags.to(scores)]).tolist()
            for mask, covered, grew, score in zip(masks, covers, grows, scores):
                stop = stop_reason(covered, score, grew, self.tau)
                if stop is not None:
                    return SufficientRegion(mask[0], step, score, stop, run.passes,
                                            run.batch_size)
                step += 1
        raise RuntimeError(f"MiSuRe stage 1 did not end within {steps.count} dilation steps")

    def minimally_sufficient(self, items: list[Item], sr_masks: list[torch.Tensor]
                             ) -> list[torch.Tensor]:
        """Stage 2 for all items at once: M_MSR (*S) per item, from M_SR (*S) per item.

        AdamW on the masks (B, 1, *mask_shape); after each step values below ``zero_below``
        become 0 and values above 1 become 1. Each item's loss only depends on its own mask,
        so the result is that of one item at a time.
        """
        images = torch.cat([item.image for item in items])
        size = tuple(images.shape[2:])
        baselines = torch.cat([item.baseline for item in items])
        sr = torch.stack(sr_masks)[:, None]
        x_sr = replace(images, sr.to(images.dtype), baselines)
        reference = torch.cat([item.probabilities for item in items])
        classes = torch.tensor([item.target.class_index for item in items], device=images.device)
        mask = resized(sr, self.mask_shape(size)).detach().clone().requires_grad_(True)
        optimizer = torch.optim.AdamW([mask], lr=self.lr)
        bar = tqdm(range(self.iterations), desc="MiSuRe stage 2", disable=not self.progress,
                   file=sys.stderr, leave=False)
        for iteration in bar:
            self._optimisation_step(mask, optimizer, x_sr, baselines, reference, classes,
                                    iteration)
        with torch.no_grad():
            return [full[0] for full in resized(mask.detach(), size)]

    def _optimisation_step(self, mask: torch.Tensor, optimizer: torch.optim.Optimizer,
                           x_sr: torch.Tensor, baselines: torch.Tensor, reference: torch.Tensor,
                           classes: torch.Tensor, iteration: int) -> None:
        """One AdamW step on ``mask`` (B, 1, *s) for X_SR (B, C, *S), then the pruning."""
        with torch.enable_grad():
            keep = resized(mask, x_sr.shape[2:]).to(x_sr.dtype)
            probabilities = self.model(replace(x_sr, keep, baselines),
                                       where=f"in MiSuRe stage 2 (iteration {iteration})")
            loss = mask_loss(mask, probabilities, reference, classes, **self.loss_weights(),
                             multilabel=self.model.multilabel)
            # each item's loss depends on its own mask only; asking for the mask's gradient
            # alone spares the backward pass the model's weight gradients
            mask.grad, = torch.autograd.grad(loss.sum(), [mask])
        check_finite(mask.grad, f"MiSuRe stage 2: the gradient of the loss with respect to the "
                                f"mask (iteration {iteration})")
        optimizer.step()
        with torch.no_grad():
            mask.masked_fill_(mask < self.zero_below, 0.0)
            mask.clamp_(max=1.0)

    # -- results --------------------------------------------------------------------------

    def _result(self, item: Item, region: SufficientRegion, msr_mask: torch.Tensor,
                timings: dict) -> Explanation:
        class_index = item.target.class_index
        x_sr = replace(item.image, region.mask[None, None].to(item.image.dtype), item.baseline)
        x_msr = replace(x_sr, msr_mask[None, None].to(item.image.dtype), item.baseline)
        with torch.no_grad():
            explained = self.segment(self.model(x_msr, where="on X_MSR"), class_index)
        reference = self.segment(item.probabilities, class_index)[0]
        dice_explained = float(batch_dice(explained, reference)[0])
        ratio = float(torch.count_nonzero(msr_mask)) / float(reference.sum().clamp(min=1))
        return self.explanation(
            item, msr_mask, timings=timings,
            arrays={"sr_mask": region.mask.cpu().numpy().astype(np.uint8),
                    "msr_mask": msr_mask.cpu().numpy().astype(np.float32),
                    "x_sr": x_sr[0].float().cpu().numpy(),
                    "x_msr": x_msr[0].float().cpu().numpy()},
            info={"dilations": region.dilations, "sr_covers_image": region.stop == "covers_image",
                  "sr_stop": region.stop, "sr_dice": region.dice,
                  "dice_explained": dice_explained, "perturbation_ratio": ratio,
                  "prediction_pixels": int(reference.sum()),
                  "mask_size": list(self.mask_shape(tuple(item.image.shape[2:]))),
                  "stage1_passes": region.passes,
                  "model_passes": region.passes + self.iterations + 2,
                  "batch_size": region.batch_size, "nothing_to_explain": False})

    def _nothing_to_explain(self, item: Item, timings: dict) -> Explanation:
        class_index = item.target.class_index
        return self.explanation(
            item, np.zeros(tuple(item.image.shape[2:]), dtype=np.float32), timings=timings,
            info={"nothing_to_explain": True,
                  "reason": f"the target region of class {class_index} is empty (the model "
                            "does not predict it in this image)"})
