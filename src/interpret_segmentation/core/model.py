"""The model adapter: any segmentation ``nn.Module`` -> per-class probabilities (B, K, H, W)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .validate import check_device, check_finite

OUTPUT_KINDS = ("auto", "logits", "probabilities")

SUPPORTED_OUTPUTS = (
    "a tensor shaped (B, H, W), (B, 1, H, W) or (B, C, H, W) (or a classifier's (B, K)), a "
    "dict with key 'out' holding one, or a tuple/list whose first element is one"
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

    Accepts a numpy array or tensor shaped (H, W), (C, H, W) or (1, C, H, W) of at least
    one channel and 1 x 1 pixels. Raises ValueError naming ``name`` for other shapes or
    non-finite values.
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
    if image.numel() == 0:
        raise ValueError(f"{name}: expected at least one channel and 1 x 1 pixels, got shape "
                         f"{tuple(image.shape)}")
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


def expected_channels(model: nn.Module) -> tuple[str, int] | None:
    """The name and ``in_channels`` of the model's first convolution (in registration order),
    or None when it has none: the number of image channels the model most likely takes."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.in_channels > 0:
            return name or type(module).__name__, module.in_channels
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


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
    A classifier's output (B, K) is read as the same K class scores at every pixel, (B, K, H,
    W) constant over the image: the predicted segment of a class is the whole image when the
    classifier predicts it and empty otherwise.

    Parameters
    ----------
    model : nn.Module
        Takes (B, C_in, H, W); returns a tensor (B, H, W), (B, 1, H, W) or (B, C, H, W)
        (or (B, K) for a classifier), a dict with key ``'out'``, or a tuple/list whose first
        element is the main output.
    output : {"auto", "logits", "probabilities"}, default "auto"
        What the model returns. "auto" decides on the first call: values inside [0, 1]
        (and, for several channels, summing to 1) are probabilities, anything else logits.
    device : torch.device or str, optional
        Where inputs are sent; default: the device of the model's first parameter (CPU if none).
        A device this machine lacks (``"cuda"`` without CUDA) is refused with a ValueError.

    Inputs are cast to the dtype of the model's first floating-point parameter (float64 and
    bfloat16 models take float32 images), outputs to float32, so maps are float32 whatever the
    model's precision. An output holding NaN or inf is refused with a ValueError that says
    where it happened. The adapter never changes the model for good: each call runs in eval
    mode and restores the previous mode of every submodule afterwards.
    """

    def __init__(self, model: nn.Module, output: str = "auto", device=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output: expected one of {OUTPUT_KINDS}, got {output!r}")
        self.model = model
        self.output = output
        parameters = list(model.parameters())
        if device is None:
            device = parameters[0].device if parameters else torch.device("cpu")
        self.device = check_device(device)
        floating = [p.dtype for p in parameters if p.is_floating_point()]
        self.dtype = floating[0] if floating else torch.float32

    def _forward(self, inputs: torch.Tensor):
        """The model's own output for ``inputs``, sent to its device and dtype."""
        with evaluation_mode(self.model):
            return self.model(inputs.to(self.device, self.dtype))

    def raw(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """The model's main output as a float32 tensor (B, C, h, w), before any activation.

        ``where`` (e.g. "in batch 3") completes the message when the output holds NaN or inf.
        """
        return self._read(self._forward(inputs), inputs, where)

    def _read(self, out, inputs: torch.Tensor, where: str | None) -> torch.Tensor:
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
        if out.ndim == 2 and out.shape[0] == inputs.shape[0]:  # a classifier's class scores
            out = out[:, :, None, None].expand(-1, -1, *inputs.shape[-2:])
        elif out.ndim == 3:
            out = out[:, None]
        if out.ndim != 4 or out.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"model output: got shape {tuple(out.shape)} for an input of shape "
                f"{tuple(inputs.shape)}; supported outputs are {SUPPORTED_OUTPUTS}"
            )
        out = out.float()
        check_finite(out, "model output" + (f" {where}" if where else ""))
        return out

    def first_pass(self, image: torch.Tensor, name: str = "image") -> torch.Tensor:
        """Probabilities (1, K, H, W) for the unperturbed ``image`` (1, C, H, W), without gradients.

        When the model fails on the image, the error says why in the library's words, naming
        ``name``: the image's channels against the first convolution's ``in_channels``, an
        image too small for the model (with the smallest square side it runs on), or else the
        model's own error.
        """
        try:
            with torch.no_grad():
                out = self._forward(image)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            if "out of memory" in str(error).lower():
                raise
            raise self._input_error(image, name, error) from error
        with torch.no_grad():
            return self._probabilities(self._sized(self._read(out, image, "on the unperturbed "
                                                                        "image"), image))

    def _input_error(self, image: torch.Tensor, name: str, error: BaseException) -> ValueError:
        channels, (height, width) = image.shape[1], image.shape[-2:]
        said = _first_line(error)
        conv = expected_channels(self.model)
        if conv is not None and conv[1] != channels:
            return ValueError(f"{name}: image has {channels} channel(s); the model's first "
                              f"convolution ({conv[0]}) expects {conv[1]}; the model said: {said}")
        side = self._smallest_side(channels, min(height, width))
        if side is not None:
            return ValueError(f"{name}: {height} x {width} pixels is too small for the model; "
                              f"the smallest square it runs on is {side} x {side} pixels (found "
                              f"with blank images); the model said: {said}")
        return ValueError(f"{name}: the model failed on an image of shape "
                          f"{tuple(image.shape)}: {said}")

    def _smallest_side(self, channels: int, side: int, limit: int = 1024) -> int | None:
        """The smallest square side above ``side`` on which the model runs on blank images
        (doubling, then bisecting: at most about 2 log2(limit) passes); None when it runs on
        ``side`` already (size is not the problem) or on no side up to ``limit``."""
        def runs(size: int) -> bool:
            try:
                with torch.no_grad():
                    self._forward(torch.zeros(1, channels, size, size))
            except Exception:  # noqa: BLE001 - any failure means it does not run
                return False
            return True

        if runs(side):
            return None
        low, high = side, 2 * side
        while not runs(high):
            low, high = high, 2 * high
            if high > limit:
                return None
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if runs(middle) else (middle, high)
        return high

    def _sized(self, out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``out`` upsampled to the input's resolution; decides "auto" on first use."""
        size = inputs.shape[-2:]
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if self.output == "auto":
            self.output = self._guess_kind(out)
        return out

    def _resized_raw(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """:meth:`raw` upsampled to the input's resolution; decides "auto" on first use."""
        return self._sized(self.raw(inputs, where), inputs)

    def scores(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """Per-class scores (B, K, H, W) to differentiate, e.g. for Seg-Grad-CAM.

        Logits as the model gives them; for a model that returns probabilities, their logarithm
        (for one channel, the log-odds). A one-channel model's foreground logit z is class 1's
        score and -z class 0's.
        """
        out = self._resized_raw(inputs, where)
        if self.output == "probabilities":
            out = out.clamp(1e-7, 1 - 1e-7)
            out = torch.log(out / (1 - out)) if out.shape[1] == 1 else torch.log(out)
        return torch.cat([-out, out], dim=1) if out.shape[1] == 1 else out

    def __call__(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """Per-class probabilities (B, K, H, W), K >= 2, at the input's resolution.

        ``where`` (e.g. "in batch 3") completes the message when the output holds NaN or inf.
        """
        return self._probabilities(self._resized_raw(inputs, where))

    def _probabilities(self, out: torch.Tensor) -> torch.Tensor:
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
