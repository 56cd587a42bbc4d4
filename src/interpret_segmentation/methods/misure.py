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
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.metrics import batch_dice
from ..core import Explainer, Explanation
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
        As for every explainer. ``batch_size`` also sets how many dilation steps stage 1
        evaluates per model pass (4 for "auto"); the result does not depend on it.

    The Explanation's ``saliency`` (H, W) is M_MSR. ``arrays`` holds "sr_mask", "msr_mask",
    "x_sr" and "x_msr" (C, H, W); ``info`` "dilations", "sr_covers_image", "sr_stop" (why stage
    1 ended: "tau", "covers_image" or "no_growth"), "sr_dice",
    "dice_explained" (class l Dice between f(X_MSR) and f(X0)), "perturbation_ratio"
    (non-zero M_MSR pixels / predicted pixels) and "nothing_to_explain"; ``timings``
    "stage1", "stage2" and "total".
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
                "iterations": self.iterations, "lr": self.lr, "lam": self.lam,
                "gamma": self.gamma, "beta": self.beta,
                "alpha_background": self.alpha_background, "alpha_class": self.alpha_class,
                "zero_below": self.zero_below}

    # -- entry points ---------------------------------------------------------------------

    # -- the two stages -------------------------------------------------------------------

    def sufficient_region(self, image: torch.Tensor, class_index: int, start: torch.Tensor,
                          reference: torch.Tensor) -> tuple[torch.Tensor, int, float, str]:
        """Stage 1 for one image (1, C, H, W): (M_SR (H, W), dilations, Dice, stop).

        ``start`` is M0 (H, W) bool and ``reference`` the class's predicted mask on X0. Several
        dilation steps are evaluated per model pass; the first step whose Dice exceeds tau
        wins, exactly as the one-step-at-a-time loop would find it. ``stop`` says why stage 1
        ended: "covers_image" (the mask covers the image), "tau" (the Dice exceeds tau) or
        "no_growth" (a dilation left the mask as it was, so no later one could change it).
        Every step grows the mask or ends the loop, so it ends after at most H x W steps.
        """
        kernel = disk_kernel(self.kernel_size).to(image.device)
        per_pass = self.batch_size if isinstance(self.batch_size, int) else 4
        mask = start.to(image.device, torch.float32)[None, None]
        dilations = 0
        while True:
            candidates = [mask]
            while len(candidates) < per_pass and not bool(candidates[-1].all()):
                grown = dilate(candidates[-1], kernel)
                if torch.equal(grown, candidates[-1]):
                    break
                candidates.append(grown)
            stack = torch.cat(candidates)
            with torch.no_grad():
                where = (f"in MiSuRe stage 1 (dilations {dilations}.."
                         f"{dilations + len(candidates) - 1})")
                predicted = predicted_mask(self.model(image * stack, where=where), class_index)
            scores = batch_dice(predicted.flatten(1), reference.flatten()).tolist()
            for step, score in enumerate(scores):
                if bool(candidates[step].all()):
                    return candidates[step][0, 0], dilations + step, score, "covers_image"
                if score > self.tau:
                    return candidates[step][0, 0], dilations + step, score, "tau"
            mask = dilate(candidates[-1], kernel)
            if torch.equal(mask, candidates[-1]):
                return mask[0, 0], dilations + len(candidates) - 1, scores[-1], "no_growth"
            dilations += len(candidates)

    def _explain_items(self, items) -> list[Explanation]:
        """Both stages for all items; stage 2 optimises their masks together."""
        items = [(item.image, item.target, item.probabilities) for item in items]
        started = time.perf_counter()
        stage1 = []
        for image, target, probabilities in items:
            reference = predicted_mask(probabilities, target.class_index)[0]
            if not target.pixels.any():
                stage1.append(None)
                continue
            stage1.append(self.sufficient_region(image, target.class_index,
                                                 target.pixels.to(image.device), reference))
        stage1_seconds = time.perf_counter() - started
        todo = [i for i, result in enumerate(stage1) if result is not None]
        tick = time.perf_counter()
        masks = self._minimally_sufficient([items[i] for i in todo],
                                           [stage1[i][0] for i in todo]) if todo else []
        stage2_seconds = time.perf_counter() - tick
        explanations = []
        for i, (image, target, probabilities) in enumerate(items):
            if stage1[i] is None:
                explanations.append(self._nothing_to_explain(image, target))
                continue
            sr_mask, dilations, sr_dice, stop = stage1[i]
            msr_mask = masks[todo.index(i)]
            explanations.append(self._result(image, target, probabilities, sr_mask, msr_mask,
                                             dilations, sr_dice, stop))
        for explanation in explanations:
            explanation.timings.update({"stage1": stage1_seconds / len(items),
                                        "stage2": stage2_seconds / len(items)})
        return explanations

    def _minimally_sufficient(self, items, sr_masks) -> list[torch.Tensor]:
        """Stage 2 for all items at once: M_MSR (H, W) per item."""
        images = torch.cat([image for image, _, _ in items])
        height, width = images.shape[-2:]
        x_sr = images * torch.stack(sr_masks)[:, None]
        classes = torch.tensor([target.class_index for _, target, _ in items], device=images.device)
        reference = torch.cat([probabilities for _, _, probabilities in items])
        rows = torch.arange(len(items), device=images.device)
        reference_class = reference[rows, classes]
        reference_background = reference[:, 0]
        side = self.mask_size
        mask = F.interpolate(torch.stack(sr_masks)[:, None], size=(side, side), mode="bilinear",
                             align_corners=False).detach().clone().requires_grad_(True)
        optimizer = torch.optim.AdamW([mask], lr=self.lr)
        with torch.enable_grad():
            for iteration in range(self.iterations):
                full = F.interpolate(mask, size=(height, width), mode="bilinear",
                                     align_corners=False)
                probabilities = self.model(x_sr * full, where=f"in MiSuRe stage 2 (iteration "
                                                              f"{iteration})")
                dice_class = soft_dice(probabilities[rows, classes], reference_class)
                dice_background = soft_dice(probabilities[:, 0], reference_background)
                # background and class 0 coincide when l = 0: count that term once
                dice_background = torch.where(classes == 0, torch.zeros_like(dice_background),
                                              dice_background)
                loss = (self.lam * mask.abs().flatten(1).mean(1)
                        + self.gamma * total_variation(mask, self.beta)
                        + 1 - self.alpha_background * dice_background
                        - self.alpha_class * dice_class)
                # items are independent: each gets its own gradient. Asking for the mask's
                # gradient only spares the backward pass the model's weight gradients.
                mask.grad, = torch.autograd.grad(loss.sum(), [mask])
                check_finite(mask.grad, f"MiSuRe stage 2: the gradient of the loss with respect "
                                        f"to the mask (iteration {iteration})")
                optimizer.step()
                with torch.no_grad():
                    mask.masked_fill_(mask < self.zero_below, 0.0)
                    mask.clamp_(max=1.0)
        with torch.no_grad():
            full = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
        return [m[0].detach() for m in full]

    def _result(self, image, target, probabilities, sr_mask, msr_mask, dilations, sr_dice,
                stop) -> Explanation:
        x_sr = image[0] * sr_mask
        x_msr = x_sr * msr_mask
        with torch.no_grad():
            explained = predicted_mask(self.model(x_msr[None], where="on X_MSR"),
                                       target.class_index)[0]
        reference = predicted_mask(probabilities, target.class_index)[0]
        dice_explained = float(batch_dice(explained.flatten()[None], reference.flatten())[0])
        ratio = float(torch.count_nonzero(msr_mask)) / float(reference.sum().clamp(min=1))
        return Explanation(
            saliency=msr_mask.cpu().numpy(),
            method=self.method,
            target_class=target.class_index,
            parameters=self.settings(),
            timings={},
            arrays={"sr_mask": sr_mask.cpu().numpy().astype(np.uint8),
                    "msr_mask": msr_mask.cpu().numpy().astype(np.float32),
                    "x_sr": x_sr.cpu().numpy(), "x_msr": x_msr.cpu().numpy()},
            info={"dilations": dilations, "sr_covers_image": stop == "covers_image",
                  "sr_stop": stop, "sr_dice": sr_dice,
                  "dice_explained": dice_explained, "perturbation_ratio": ratio,
                  "prediction_pixels": int(reference.sum()), "nothing_to_explain": False},
        )

    def _nothing_to_explain(self, image, target) -> Explanation:
        zeros = np.zeros(tuple(image.shape[-2:]), dtype=np.float32)
        return Explanation(
            saliency=zeros, method=self.method, target_class=target.class_index,
            parameters=self.settings(), timings={},
            info={"nothing_to_explain": True,
                  "reason": f"the target region of class {target.class_index} is empty (the "
                            "model does not predict it in this image)"},
        )
