"""MiSuRe: the sufficient region and the minimally sufficient region of a segment (seed 001).

Stage 1 (Algorithm 1). Start from the class's predicted mask M0, keep only those pixels of the
image (X_m = X0 * M0) and compare the class's prediction on X_m with its prediction on X0 by
Dice. While the Dice is at most ``tau``, dilate the mask with a circular ``kernel_size`` kernel.
The result is the sufficient region: mask M_SR, image X_SR = X0 * M_SR, number of dilations.

Stage 2 (Eq. 1). Optimise a one-channel ``mask_size`` x ``mask_size`` mask M, initialised from
M_SR and resized to the image, to minimise

    lambda * mean|M| + gamma * TV_beta(M)
    + 1 - sum_{i in {0, l}} alpha_i * softDice(f(X_SR * M)_i, f(X0)_i)

with AdamW; after each step values below ``zero_below`` become 0 and values above 1 become 1.
The result is the minimally sufficient region M_MSR and X_MSR = X_SR * M_MSR. The paper gives
no gamma or beta; here TV_beta is the mean over pixels of |dM/dx|^beta + |dM/dy|^beta with
beta = 3 (as Fong and Vedaldi's meaningful perturbations) and gamma = 0.05, a mild smoothing.

Several images, or several classes of one image, are optimised in one batch with
:meth:`MiSuRe.explain_batch`; each item's loss and optimiser state are its own, so the result is
that of explaining them one at a time.

The module's parts: :class:`DilationSteps` (stage 1's masks, built on demand) and
:func:`stop_reason` (when stage 1 ends); :func:`mask_loss` (stage 2's loss) with
:func:`soft_dice` and :func:`total_variation`; :class:`MiSuRe` holds the configuration and runs
the stages (:meth:`MiSuRe.sufficient_region`, :meth:`MiSuRe.minimally_sufficient`).
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
from ..core.model import predicted_mask
from ..core.validate import check_finite, check_number, check_positive, is_int


def disk_kernel(size: int) -> torch.Tensor:
    """A circular structuring element (size, size) of 0/1 floats; ``size`` odd."""
    radius = size // 2
    offsets = torch.arange(size, dtype=torch.float32) - radius
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2 + 1e-6).float()


def dilate(masks: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Binary dilation of masks (B, 1, H, W) (0/1 floats) with ``kernel`` (k, k)."""
    pad = kernel.shape[-1] // 2
    grown = F.conv2d(masks, kernel[None, None].to(masks), padding=pad)
    return (grown > 0.5).to(masks.dtype)


def soft_dice(predicted: torch.Tensor, reference: torch.Tensor, epsilon: float = 1.0) -> torch.Tensor:
    """Soft Dice per item between maps (B, H, W): (2 sum(p q) + eps) / (sum p + sum q + eps)."""
    predicted, reference = predicted.flatten(1), reference.flatten(1)
    return ((2 * (predicted * reference).sum(1) + epsilon)
            / (predicted.sum(1) + reference.sum(1) + epsilon))


def total_variation(masks: torch.Tensor, beta: float) -> torch.Tensor:
    """Per item, the mean over pixels of |dM/dy|^beta + |dM/dx|^beta for masks (B, 1, h, w)."""
    dy = (masks[..., 1:, :] - masks[..., :-1, :]).abs().pow(beta)
    dx = (masks[..., :, 1:] - masks[..., :, :-1]).abs().pow(beta)
    pixels = masks.shape[-1] * masks.shape[-2]
    return (dy.flatten(1).sum(1) + dx.flatten(1).sum(1)) / pixels


# -- stage 1: the sufficient region ---------------------------------------------------------

class DilationSteps:
    """Stage 1's masks: step 0 is M0, step s + 1 the dilation of step s; built on demand.

    Only a few masks are kept (M0, and the first and last of the latest request), so memory
    does not grow with the number of steps; a request may repeat the latest one (as a batch
    retried after an out-of-memory error does) or continue where it ended.

    Parameters
    ----------
    start : Tensor (H, W)
        M0, bool or 0/1.
    kernel : Tensor (k, k)
        The structuring element (:func:`disk_kernel`).
    """

    def __init__(self, start: torch.Tensor, kernel: torch.Tensor):
        self.kernel = kernel
        self._known = {0: start.to(torch.float32)[None, None]}

    @property
    def count(self) -> int:
        """An upper bound on the steps before a non-empty M0 covers the image or stops growing.

        A disk of radius r >= 1 holds the L1 ball of radius r, so n dilations reach every
        pixel within L1 distance n r of M0, and no pixel is farther than (H - 1) + (W - 1):
        steps 0 .. ceil((H + W - 2) / r). A kernel of radius 0 never grows the mask (step 0
        ends it); it is counted as radius 1.
        """
        height, width = self._known[0].shape[-2:]
        radius = max(self.kernel.shape[-1] // 2, 1)
        return math.ceil((height + width - 2) / radius) + 1

    def masks(self, start: int, stop: int) -> torch.Tensor:
        """The masks of steps ``start`` .. ``stop``, both included: (stop - start + 1, 1, H, W).

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


def stop_reason(mask: torch.Tensor, dice: float, grows: bool, tau: float) -> str | None:
    """Why stage 1 ends at a step, or None to go on.

    "covers_image" when ``mask`` covers the image, else "tau" when ``dice`` > ``tau``, else
    "no_growth" when the next dilation leaves the mask as it is (no later step could differ).
    """
    if bool(mask.all()):
        return "covers_image"
    if dice > tau:
        return "tau"
    if not grows:
        return "no_growth"
    return None


@dataclass(frozen=True)
class SufficientRegion:
    """Stage 1's result for one item: M_SR (H, W) 0/1 floats, the number of dilations from M0,
    the Dice between the prediction on X0 * M_SR and on X0, why it ended (:func:`stop_reason`),
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
              alpha_background: float, alpha_class: float) -> torch.Tensor:
    """Stage 2's loss per item (Eq. 1 of seed 001).

    lam * mean|M| + gamma * TV_beta(M) + 1 - alpha_background * softDice(P_0, R_0)
    - alpha_class * softDice(P_l, R_l), where P are the probabilities on the masked image and
    R those on X0. When l = 0 the background term is left out, so the class counts once.

    Parameters
    ----------
    mask : Tensor (B, 1, h, w)
        The optimised masks at their own size.
    probabilities, reference : Tensor (B, K, H, W)
    classes : Tensor (B,) int64
        Class l of each item.

    Returns
    -------
    Tensor (B,)
    """
    rows = torch.arange(len(classes), device=probabilities.device)
    dice_class = soft_dice(probabilities[rows, classes], reference[rows, classes])
    dice_background = soft_dice(probabilities[:, 0], reference[:, 0])
    dice_background = torch.where(classes == 0, torch.zeros_like(dice_background), dice_background)
    return (lam * mask.abs().flatten(1).mean(1) + gamma * total_variation(mask, beta)
            + 1 - alpha_background * dice_background - alpha_class * dice_class)


def resized(masks: torch.Tensor, size) -> torch.Tensor:
    """Masks (B, 1, h, w) resized bilinearly to ``size`` (height, width)."""
    return F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False)


class MiSuRe(Explainer):
    """Sufficient and minimally sufficient regions (seed 001, sections 3.1 and 4.2).

    Parameters
    ----------
    model : nn.Module
    tau : float, default 0.9
        Stage 1 dilates while Dice(f(X0), f(X_m)) <= tau; in (0, 1].
    kernel_size : int, default 7
        Side of the circular dilation kernel: odd and at least 3 (a 1 x 1 kernel would never
        grow the mask).
    mask_size : int, default 224
        Side of the optimised mask; it is resized to the image bilinearly.
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
        Weights of the background (class 0) and class-l soft Dice terms.
    zero_below : float, default 0.2
        After each step mask values below it become 0 (values above 1 become 1).
    output, device, batch_size, progress
        As for every explainer. Stage 1's dilation steps run ``batch_size`` per model pass
        (the last pass may hold steps after the one that ends it); stage 2 runs all items
        of :meth:`explain_batch` in one pass per iteration. The result does not depend on
        ``batch_size``. With ``progress``, each stage shows a bar on stderr.

    The Explanation's ``saliency`` (H, W) is M_MSR. ``arrays`` holds "sr_mask", "msr_mask",
    "x_sr" and "x_msr" (C, H, W); ``info`` "dilations", "sr_covers_image", "sr_stop" (why stage
    1 ended: "tau", "covers_image" or "no_growth"), "sr_dice",
    "dice_explained" (class l Dice between f(X_MSR) and f(X0)), "perturbation_ratio"
    (non-zero M_MSR pixels / predicted pixels), "stage1_passes" (dilation steps run),
    "model_passes" (inputs run for the item: X0, stage 1's steps, stage 2's iterations and
    X_MSR), "batch_size" (stage 1's) and "nothing_to_explain"; ``timings`` "stage1",
    "stage2" and "total".
    """

    method = "misure"

    def __init__(self, model, tau: float = 0.9, kernel_size: int = 7, mask_size: int = 224,
                 iterations: int = 100, lr: float = 0.1, lam: float = 0.01, gamma: float = 0.05,
                 beta: float = 3.0, alpha_background: float = 1.0, alpha_class: float = 2.0,
                 zero_below: float = 0.2, **options):
        super().__init__(model, **options)
        self.tau = check_number(tau, "tau", 0, 1, open_low=True)
        if not is_int(kernel_size) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd int >= 3 (a 1 x 1 kernel never grows "
                             f"the mask), got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.mask_size = check_positive(mask_size, "mask_size")
        self.iterations = check_positive(iterations, "iterations")
        self.lr = check_positive(lr, "lr", float)
        self.lam, self.gamma = check_number(lam, "lam", 0), check_number(gamma, "gamma", 0)
        self.alpha_background = check_number(alpha_background, "alpha_background", 0)
        self.alpha_class = check_number(alpha_class, "alpha_class", 0)
        self.beta = check_positive(beta, "beta", float)
        self.zero_below = check_number(zero_below, "zero_below", 0, 1, open_high=True)

    def settings(self) -> dict:
        """The method's parameters, as recorded in each Explanation."""
        return {"tau": self.tau, "kernel_size": self.kernel_size, "mask_size": self.mask_size,
                "iterations": self.iterations, "lr": self.lr, **self.loss_weights(),
                "zero_below": self.zero_below}

    def loss_weights(self) -> dict:
        """The keyword arguments of :func:`mask_loss`."""
        return {"lam": self.lam, "gamma": self.gamma, "beta": self.beta,
                "alpha_background": self.alpha_background, "alpha_class": self.alpha_class}

    def _explain_items(self, items: list[Item]) -> list[Explanation]:
        """Stage 1 per item, then stage 2 for all items that have something to explain."""
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
        reference = predicted_mask(item.probabilities, class_index)[0]
        steps = DilationSteps(item.target.pixels.to(image.device),
                              disk_kernel(self.kernel_size).to(image.device))

        def make(start: int, stop: int):
            masks = steps.masks(start, stop)
            grows = (masks[1:] != masks[:-1]).flatten(1).any(1).tolist()
            return (masks[:-1], grows), image * masks[:-1]

        run = self.perturbations(steps.count, make, "MiSuRe stage 1 dilations")
        step = 0
        for (masks, grows), probabilities in run:
            scores = batch_dice(predicted_mask(probabilities, class_index), reference).tolist()
            for mask, grew, score in zip(masks, grows, scores):
                stop = stop_reason(mask, score, grew, self.tau)
                if stop is not None:
                    return SufficientRegion(mask[0], step, score, stop, run.passes,
                                            run.batch_size)
                step += 1
        raise RuntimeError(f"MiSuRe stage 1 did not end within {steps.count} dilation steps")

    def minimally_sufficient(self, items: list[Item], sr_masks: list[torch.Tensor]
                             ) -> list[torch.Tensor]:
        """Stage 2 for all items at once: M_MSR (H, W) per item, from M_SR (H, W) per item.

        AdamW on the masks (B, 1, mask_size, mask_size); after each step values below
        ``zero_below`` become 0 and values above 1 become 1. Each item's loss only depends
        on its own mask, so the result is that of one item at a time.
        """
        images = torch.cat([item.image for item in items])
        size = images.shape[-2:]
        x_sr = images * torch.stack(sr_masks)[:, None]
        reference = torch.cat([item.probabilities for item in items])
        classes = torch.tensor([item.target.class_index for item in items], device=images.device)
        mask = resized(torch.stack(sr_masks)[:, None], (self.mask_size, self.mask_size))
        mask = mask.detach().clone().requires_grad_(True)
        optimizer = torch.optim.AdamW([mask], lr=self.lr)
        bar = tqdm(range(self.iterations), desc="MiSuRe stage 2", disable=not self.progress,
                   file=sys.stderr, leave=False)
        for iteration in bar:
            self._optimisation_step(mask, optimizer, x_sr, reference, classes, iteration)
        with torch.no_grad():
            return [full[0] for full in resized(mask.detach(), size)]

    def _optimisation_step(self, mask: torch.Tensor, optimizer: torch.optim.Optimizer,
                           x_sr: torch.Tensor, reference: torch.Tensor, classes: torch.Tensor,
                           iteration: int) -> None:
        """One AdamW step on ``mask`` (B, 1, s, s) for X_SR (B, C, H, W), then the pruning."""
        with torch.enable_grad():
            probabilities = self.model(x_sr * resized(mask, x_sr.shape[-2:]),
                                       where=f"in MiSuRe stage 2 (iteration {iteration})")
            loss = mask_loss(mask, probabilities, reference, classes, **self.loss_weights())
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
        x_sr = item.image[0] * region.mask
        x_msr = x_sr * msr_mask
        with torch.no_grad():
            explained = predicted_mask(self.model(x_msr[None], where="on X_MSR"), class_index)[0]
        reference = predicted_mask(item.probabilities, class_index)[0]
        dice_explained = float(batch_dice(explained[None], reference)[0])
        ratio = float(torch.count_nonzero(msr_mask)) / float(reference.sum().clamp(min=1))
        return self.explanation(
            item, msr_mask, timings=timings,
            arrays={"sr_mask": region.mask.cpu().numpy().astype(np.uint8),
                    "msr_mask": msr_mask.cpu().numpy().astype(np.float32),
                    "x_sr": x_sr.cpu().numpy(), "x_msr": x_msr.cpu().numpy()},
            info={"dilations": region.dilations, "sr_covers_image": region.stop == "covers_image",
                  "sr_stop": region.stop, "sr_dice": region.dice,
                  "dice_explained": dice_explained, "perturbation_ratio": ratio,
                  "prediction_pixels": int(reference.sum()), "stage1_passes": region.passes,
                  "model_passes": region.passes + self.iterations + 2,
                  "batch_size": region.batch_size, "nothing_to_explain": False})

    def _nothing_to_explain(self, item: Item, timings: dict) -> Explanation:
        class_index = item.target.class_index
        return self.explanation(
            item, np.zeros(tuple(item.image.shape[-2:]), dtype=np.float32), timings=timings,
            info={"nothing_to_explain": True,
                  "reason": f"the target region of class {class_index} is empty (the model "
                            "does not predict it in this image)"})
