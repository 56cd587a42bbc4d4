"""The model adapter: any segmentation ``nn.Module`` -> per-class probabilities (B, K, H, W)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OUTPUT_KINDS = ("auto", "logits", "probabilities")

SUPPORTED_OUTPUTS = (
    "a tensor shaped (B, H, W), (B, 1, H, W) or (B, C, H, W), a dict with key 'out' "
    "holding one, or a tuple/list whose first element is one"
)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's mode afterwards.

    The restoration happens in ``finally``, so it also holds after an exception.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def as_image_batch(image, name: str = "image") -> torch.Tensor:
    """Validate an image and return it as a float32 batch of one, (1, C, H, W).

    Accepts a numpy array or tensor shaped (H, W), (C, H, W) or (1, C, H, W).
    Raises ValueError naming ``name`` for other shapes or non-finite values.
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[None, None]
    elif image.ndim == 3:
        image = image[None]
    elif image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(
            f"{name}: expected shape (H, W), (C, H, W) or (1, C, H, W), got {tuple(image.shape)}"
        )
    image = image.detach().float()
    if not torch.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return image


def as_mask(mask, shape: tuple[int, int], name: str) -> torch.Tensor:
    """Validate a binary mask against an image's (H, W) and return it as a bool tensor (H, W)."""
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(mask).__name__}")
    mask = mask.detach()
    while mask.ndim > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name}: expected a mask of the image's size {tuple(shape)}, got {tuple(mask.shape)}"
        )
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return mask > 0.5 if mask.is_floating_point() else mask != 0


def predicted_mask(probabilities: torch.Tensor, class_index: int) -> torch.Tensor:
    """Where ``class_index`` is the arg-max class: bool (B, H, W) from probabilities (B, K, H, W).

    Ties go to the lower class index, as with ``argmax``; computed by comparisons, which is
    much faster on CPU than ``argmax`` over a short class dimension.
    """
    chosen = probabilities[:, class_index]
    mask = torch.ones_like(chosen, dtype=torch.bool)
    for other in range(probabilities.shape[1]):
        if other < class_index:
            mask &= chosen > probabilities[:, other]
        elif other > class_index:
            mask &= chosen >= probabilities[:, other]
    return mask


class ModelAdapter:
    """Wrap a segmentation model so that it returns per-class probabilities (B, K, H, W).

    A one-channel model is read as a sigmoid foreground score and turned into two classes,
    ``[1 - p, p]``, so class 1 is always "the foreground" and class 0 "the background".
    A model with C > 1 channels is read as C classes (softmax over channels).
    Outputs smaller than the input are upsampled bilinearly before the activation.

    Parameters
    ----------
    model : nn.Module
        Takes (B, C_in, H, W); returns a tensor (B, H, W), (B, 1, H, W) or (B, C, H, W),
        a dict with key ``'out'``, or a tuple/list whose first element is the main output.
    output : {"auto", "logits", "probabilities"}, default "auto"
        What the model returns. "auto" decides on the first call: values inside [0, 1]
        (and, for several channels, summing to 1) are probabilities, anything else logits.
    device : torch.device or str, optional
        Where inputs are sent; default: the device of the model's first parameter (CPU if none).

    The adapter never changes the model for good: each call runs in eval mode and restores
    the previous mode of every submodule afterwards.
    """

    def __init__(self, model: nn.Module, output: str = "auto", device=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output: expected one of {OUTPUT_KINDS}, got {output!r}")
        self.model = model
        self.output = output
        if device is None:
            parameter = next(model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
        self.device = torch.device(device)

    def raw(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's main output as a tensor (B, C, h, w), before any activation."""
        with evaluation_mode(self.model):
            out = self.model(inputs.to(self.device))
        if isinstance(out, dict):
            if "out" not in out:
                raise ValueError(
                    f"model output: a dict without key 'out' (keys {sorted(out)}); "
                    f"supported outputs are {SUPPORTED_OUTPUTS}"
                )
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            if not out:
                raise ValueError(f"model output: an empty {type(out).__name__}; "
                                 f"supported outputs are {SUPPORTED_OUTPUTS}")
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"model output: got {type(out).__name__}; supported outputs are {SUPPORTED_OUTPUTS}"
            )
        if out.ndim == 3:
            out = out[:, None]
        if out.ndim != 4 or out.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"model output: got shape {tuple(out.shape)} for an input of shape "
                f"{tuple(inputs.shape)}; supported outputs are {SUPPORTED_OUTPUTS}"
            )
        if not out.is_floating_point():
            out = out.float()
        return out

    def _resized_raw(self, inputs: torch.Tensor) -> torch.Tensor:
        """:meth:`raw` upsampled to the input's resolution; decides "auto" on first use."""
        out = self.raw(inputs)
        size = inputs.shape[-2:]
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if self.output == "auto":
            self.output = self._guess_kind(out)
        return out

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """Per-class scores (B, K, H, W) to differentiate, e.g. for Seg-Grad-CAM.

        Logits as the model gives them; for a model that returns probabilities, their logarithm
        (for one channel, the log-odds). A one-channel model's foreground logit z is class 1's
        score and -z class 0's.
        """
        out = self._resized_raw(inputs)
        if self.output == "probabilities":
            out = out.clamp(1e-7, 1 - 1e-7)
            out = torch.log(out / (1 - out)) if out.shape[1] == 1 else torch.log(out)
        return torch.cat([-out, out], dim=1) if out.shape[1] == 1 else out

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities (B, K, H, W), K >= 2, at the input's resolution."""
        out = self._resized_raw(inputs)
        if out.shape[1] == 1:
            foreground = torch.sigmoid(out) if self.output == "logits" else out
            return torch.cat([1 - foreground, foreground], dim=1).contiguous()
        # contiguous: a channels-last output makes reductions over classes (argmax) very slow
        return (torch.softmax(out, dim=1) if self.output == "logits" else out).contiguous()

    @staticmethod
    def _guess_kind(out: torch.Tensor) -> str:
        out = out.detach()
        if out.min() < 0 or out.max() > 1:
            return "logits"
        if out.shape[1] > 1 and not torch.allclose(out.sum(1), torch.ones(()), atol=1e-3):
            return "logits"
        return "probabilities"
