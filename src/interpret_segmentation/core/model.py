"""The model adapter: any segmentation model or callable -> per-class probabilities (B, K, *S).

S is the spatial shape: (H, W) for images, (D, H, W) for volumes. The adapter reads the
model's output whatever its form (a tensor, a dict or Hugging Face ``ModelOutput`` with
``logits`` or ``out``, a tuple, or what a user's ``read`` function extracts), brings it to the
input's resolution and turns it into probabilities: softmax classes, per-channel sigmoid labels
(multi-label heads) or, for one channel, a sigmoid foreground read as two classes. It also holds
the one definition of "the class's segment" (:meth:`ModelAdapter.segment`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .validate import ArgumentTypeError, check_bool, check_choice, check_device, check_finite, check_int

OUTPUT_KINDS = ("auto", "logits", "probabilities")
ACTIVATIONS = ("auto", "softmax", "sigmoid")
OUTPUT_KEYS = ("logits", "out")
"""Keys of a dict or ``ModelOutput`` read as the main output, in this order."""

SUPPORTED_OUTPUTS = (
    "a tensor shaped (B, K, *S) or (B, *S) for an input (B, C, *S) (or a classifier's (B, K)), "
    "a dict or Hugging Face ModelOutput with key 'logits' or 'out' holding one, or a tuple/list "
    "whose first element is one; pass read= (a key, or a function of the model's output that "
    "returns the tensor) for any other form"
)

_UPSAMPLING = {1: "linear", 2: "bilinear", 3: "trilinear"}
_LAYOUTS = {
    None: {2: "(H, W)", 3: "(C, H, W)", 4: "(1, C, H, W)", 5: "(1, C, D, H, W)"},
    2: {2: "(H, W)", 3: "(C, H, W)", 4: "(1, C, H, W)"},
    3: {3: "(D, H, W)", 4: "(C, D, H, W)", 5: "(1, C, D, H, W)"},
}
"""For each ``spatial_dims``: the number of array dimensions -> the layout it is read as."""


@contextlib.contextmanager
def evaluation_mode(model) -> Iterator:
    """Put ``model`` in eval mode for the block and restore every submodule's mode afterwards.

    The restoration happens in ``finally``, so it also holds after an exception. A callable
    that is not an ``nn.Module`` has no modes and is left as it is.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def check_spatial_dims(spatial_dims, name: str = "spatial_dims") -> int | None:
    """``spatial_dims`` after checking it is None (decide from the array), 2 or 3."""
    if spatial_dims is None:
        return None
    return check_int(spatial_dims, name, 2, 3)


def as_image_batch(image, name: str = "image", spatial_dims: int | None = None) -> torch.Tensor:
    """Validate an image or volume and return it as a float32 batch of one, (1, C, *S).

    Parameters
    ----------
    image : numpy array or tensor
        With ``spatial_dims`` None: (H, W), (C, H, W), (1, C, H, W) or a volume
        (1, C, D, H, W). With ``spatial_dims=2``: the first three. With ``spatial_dims=3``:
        (D, H, W), (C, D, H, W) or (1, C, D, H, W).
    name : str, default "image"
        The argument, as messages name it.
    spatial_dims : {None, 2, 3}, default None
        Spatial dimensions of the image; None decides from the array (5-D is a volume).

    Raises
    ------
    ValueError
        Naming ``name`` for other shapes, an empty image and NaN or inf values.
    TypeError
        For something that is no array or tensor.
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(image).__name__}")
    layouts = _LAYOUTS[spatial_dims]
    dims = spatial_dims or (3 if image.ndim == 5 else 2)
    batched = dims + 2  # the number of dimensions of (1, C, *S)
    if image.ndim not in layouts or (image.ndim == batched and image.shape[0] != 1):
        shapes = ", ".join(layouts.values())
        hint = " (a (C, D, H, W) or (D, H, W) volume needs spatial_dims=3)" if spatial_dims is None else ""
        raise ValueError(f"{name}: expected shape {shapes}{hint}, got {tuple(image.shape)}")
    image = image.reshape((1,) * (batched - image.ndim) + tuple(image.shape))
    if image.numel() == 0:
        unit = "1 x 1 pixels" if image.ndim == 4 else "1 x 1 x 1 voxels"
        raise ValueError(f"{name}: expected at least one channel and {unit}, got shape "
                         f"{tuple(image.shape)}")
    image = image.detach().float()
    if not torch.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return image


def as_mask(mask, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Validate a binary mask against an image's spatial shape S and return it as bool (*S).

    Leading axes of length 1 beyond S are dropped ((1, H, W) for (H, W)); a float mask is
    read as ``mask > 0.5``, any other as ``mask != 0``.
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(mask).__name__}")
    mask = mask.detach()
    while mask.ndim > len(shape) and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name}: expected a mask of the image's size {tuple(shape)}, got {tuple(mask.shape)}"
        )
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return mask > 0.5 if mask.is_floating_point() else mask != 0


def first_convolution(model) -> tuple[str, nn.Module] | None:
    """The name and module of the model's first convolution (in registration order), or None
    when it has none or is not an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        return None
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.in_channels > 0:
            return name or type(module).__name__, module
    return None


def expected_channels(model) -> tuple[str, int] | None:
    """The name and ``in_channels`` of the model's first convolution (in registration order),
    or None when it has none: the number of image channels the model most likely takes."""
    found = first_convolution(model)
    return None if found is None else (found[0], found[1].in_channels)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def predicted_mask(probabilities: torch.Tensor, class_index: int) -> torch.Tensor:
    """Where ``class_index`` is the arg-max class: bool (B, *S) from probabilities (B, K, *S).

    The segment of softmax classes (:meth:`ModelAdapter.segment` is the definition for every
    kind of model). Ties go to the lower class index, as with ``argmax``; computed by
    comparisons, which is much faster on CPU than ``argmax`` over a short class dimension.
    """
    chosen = probabilities[:, class_index]
    mask = torch.ones_like(chosen, dtype=torch.bool)
    for other in range(probabilities.shape[1]):
        if other < class_index:
            mask &= chosen > probabilities[:, other]
        elif other > class_index:
            mask &= chosen >= probabilities[:, other]
    return mask


def _check_read(read):
    if read is None or callable(read) or (isinstance(read, str) and read):
        return read
    raise ArgumentTypeError(f"read: expected None, a key (str) or a function of the model's output "
                            f"returning the output tensor, got {type(read).__name__}")


def _parameter_tensors(model) -> list[torch.Tensor]:
    if not isinstance(model, nn.Module):
        return []
    return list(model.parameters()) + list(model.buffers())


class ModelAdapter:
    """Wrap a segmentation model so that it returns per-class probabilities (B, K, *S).

    Parameters
    ----------
    model : nn.Module or callable
        Takes (B, C, *S), S = (H, W) or (D, H, W); returns a tensor (B, K, *S) or (B, *S) (or
        (B, K) for a classifier), a dict or Hugging Face ``ModelOutput`` with key ``'logits'``
        or ``'out'`` holding one, or a tuple/list whose first element is the main output.
        Outputs smaller than the input are upsampled (bilinear in 2-D, trilinear in 3-D)
        before the activation. A callable that is no ``nn.Module`` is run as it is (no modes,
        no hooks; methods that read layers need a module, see :meth:`require_module`).
    output : {"auto", "logits", "probabilities"}, default "auto"
        What the model returns. "auto" decides on the first call: values outside [0, 1] are
        logits; values inside [0, 1] are read as probabilities (softmax channels must also sum
        to 1 to count as such) and, where that reading is a guess (one channel, sigmoid
        labels, or channels in [0, 1] that do not sum to 1), a UserWarning naming ``output=``
        says so, once per adapter. Every method uses this default.
    device : torch.device or str, optional
        Where inputs are sent; default: the device of the model's first parameter or buffer
        (CPU if none). A device this machine lacks (``"cuda"`` without CUDA) is refused.
    activation : {"auto", "softmax", "sigmoid"}, default "auto"
        "softmax": K >= 2 channels are classes; a class's segment is where it is the arg-max.
        "sigmoid": each of K >= 2 channels is an independent label (multi-label heads,
        overlapping segments); class k's segment is ``p_k > 0.5``. "auto": softmax for K >= 2.
        With either "auto" or "sigmoid", one channel is a sigmoid foreground read as two
        classes ``[1 - p, p]`` (class 1 the foreground, its segment ``p > 0.5``).
    read : str or callable, optional
        How to find the main output in what the model returns: a key (of a dict, or an
        attribute) or a function ``raw_output -> tensor``. Default: the forms listed above.
    autocast : bool, default False
        Run the model under ``torch.autocast`` on its device type (bfloat16 on CPU, float16
        on CUDA).

    The model runs in its own dtype (inputs are cast to its first floating parameter's dtype:
    float16, bfloat16, float64 ...) and on its device; probabilities and scores come back as
    float32 on that device. An output holding NaN or inf is refused with a ValueError that says
    where it happened. The model is never changed for good: each call runs in eval mode and
    the previous mode of every submodule is restored afterwards.
    """

    def __init__(self, model, output: str = "auto", device=None, *, activation: str = "auto",
                 read: str | Callable | None = None, autocast: bool = False):
        if not callable(model):
            raise TypeError(f"model: expected a torch.nn.Module or a callable taking (B, C, *S), "
                            f"got {type(model).__name__}")
        self.model = model
        self.output = check_choice(output, "output", OUTPUT_KINDS)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.read = _check_read(read)
        self.autocast = check_bool(autocast, "autocast")
        tensors = _parameter_tensors(model)
        if device is None:
            device = tensors[0].device if tensors else torch.device("cpu")
        self.device = check_device(device)
        floating = [t.dtype for t in tensors if t.is_floating_point()]
        self.dtype = floating[0] if floating else torch.float32
        self.channels: int | None = None
        """Channels of the model's output (K before the activation), known after the first call."""

    @property
    def is_module(self) -> bool:
        """Whether the model is an ``nn.Module`` (modes, folding and hooks apply)."""
        return isinstance(self.model, nn.Module)

    @property
    def multilabel(self) -> bool:
        """Whether channels are independent sigmoid labels (``activation="sigmoid"``, K >= 2)."""
        return self.activation == "sigmoid" and (self.channels is None or self.channels >= 2)

    def require_module(self, method: str, why: str = "it reads the model's layers") -> nn.Module:
        """The model, after checking it is an ``nn.Module``: TypeError naming ``model`` and
        ``method`` otherwise (e.g. Seg-Grad-CAM, which hooks a layer)."""
        if not self.is_module:
            raise TypeError(f"model: {method} needs a torch.nn.Module ({why}), got "
                            f"{type(self.model).__name__}; black-box methods (HDM, RISE, MiSuRe) "
                            "take any callable")
        return self.model

    def _context(self) -> contextlib.AbstractContextManager:
        if not self.autocast:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _forward(self, inputs: torch.Tensor):
        """The model's own output for ``inputs``, sent to its device and dtype."""
        inputs = inputs.to(self.device, self.dtype)
        with evaluation_mode(self.model), self._context():
            return self.model(inputs)

    def raw(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """The model's main output as a float32 tensor (B, K, *s), before any activation.

        ``where`` (e.g. "in batch 3") completes the message when the output holds NaN or inf.
        """
        return self._read(self._forward(inputs), inputs, where)

    def _main_tensor(self, out, depth: int = 0):
        """The main output tensor in ``out`` without ``read`` (None when there is none)."""
        if isinstance(out, torch.Tensor):
            return out
        if depth > 3:
            return None
        if isinstance(out, Mapping):
            for key in OUTPUT_KEYS:
                if key in out and out[key] is not None:
                    return self._main_tensor(out[key], depth + 1)
            return None
        if isinstance(out, (tuple, list)) and out:
            return self._main_tensor(out[0], depth + 1)
        return None

    def _extract(self, out) -> torch.Tensor:
        if self.read is None:
            tensor = self._main_tensor(out)
            if tensor is None:
                keys = f" (keys {sorted(map(str, out))})" if isinstance(out, Mapping) else ""
                kind = f"an empty {type(out).__name__}" if isinstance(out, (tuple, list)) and not out \
                    else type(out).__name__
                raise ValueError(f"model output: got {kind}{keys}; supported outputs are "
                                 f"{SUPPORTED_OUTPUTS}")
            return tensor
        if isinstance(self.read, str):
            if isinstance(out, Mapping):
                if self.read not in out:
                    raise ValueError(f"read: the model's output has no key {self.read!r} (keys "
                                     f"{sorted(map(str, out))})")
                tensor = out[self.read]
            elif hasattr(out, self.read):
                tensor = getattr(out, self.read)
            else:
                raise ValueError(f"read: the model's output ({type(out).__name__}) has no key or "
                                 f"attribute {self.read!r}")
        else:
            tensor = self.read(out)
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"read: expected the model's output tensor (B, K, *S), got "
                             f"{type(tensor).__name__}")
        return tensor

    def _read(self, out, inputs: torch.Tensor, where: str | None) -> torch.Tensor:
        out = self._extract(out)
        batch, spatial = inputs.shape[0], tuple(inputs.shape[2:])
        if out.ndim == 2 and out.shape[0] == batch:  # a classifier's class scores
            out = out.reshape(*out.shape, *([1] * len(spatial))).expand(-1, -1, *spatial)
        elif out.ndim == len(spatial) + 1:
            out = out[:, None]
        if out.ndim != len(spatial) + 2 or out.shape[0] != batch or out.shape[1] == 0:
            hint = self._dimensions_hint(inputs)
            raise ValueError(f"model output: got shape {tuple(out.shape)} for an input of shape "
                             f"{tuple(inputs.shape)}; supported outputs are {SUPPORTED_OUTPUTS}"
                             + (f"; {hint}" if hint else ""))
        out = out.float()
        check_finite(out, "model output" + (f" {where}" if where else ""))
        if self.channels is None:
            self._check_channels(out.shape[1])
            self.channels = out.shape[1]
        return out

    def _check_channels(self, channels: int) -> None:
        if self.activation == "softmax" and channels == 1:
            raise ValueError("activation: 'softmax' needs at least 2 output channels (classes); "
                             "this model has 1, a sigmoid foreground: use activation='auto' or "
                             "'sigmoid'")

    def _dimensions_hint(self, image: torch.Tensor) -> str | None:
        """Why a model may fail on ``image``: its first convolution has another number of
        spatial dimensions than the image was read with (None when that is not it)."""
        found = first_convolution(self.model)
        spatial = image.ndim - 2
        if found is None or len(found[1].kernel_size) not in (2, 3) \
                or len(found[1].kernel_size) == spatial:
            return None
        dims = len(found[1].kernel_size)
        layout = "a 2-D image (1, C, H, W)" if spatial == 2 else "a volume (1, C, D, H, W)"
        advice = ("pass a volume (1, C, D, H, W), or spatial_dims=3 to read a (C, D, H, W) or "
                  "(D, H, W) array as one" if dims == 3 else "pass 2-D images (1, C, H, W)")
        return (f"the model's first convolution ({found[0]}) is {dims}-D but the input was read "
                f"as {layout} of shape {tuple(image.shape)}: {advice}")

    def first_pass(self, image: torch.Tensor, name: str = "image") -> torch.Tensor:
        """Probabilities (1, K, *S) for the unperturbed ``image`` (1, C, *S), without gradients.

        When the model fails on the image, the error says why in the library's words, naming
        ``name``: the image's channels against the first convolution's ``in_channels``, its
        spatial dimensions against the convolution's, an image too small for the model (with
        the smallest square or cube it runs on), or else the model's own error.
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
        channels, spatial = image.shape[1], tuple(image.shape[2:])
        said = _first_line(error)
        hint = self._dimensions_hint(image)  # first: a wrong reading also miscounts channels
        if hint is not None:
            return ValueError(f"{name}: {hint}; the model said: {said}")
        conv = expected_channels(self.model)
        if conv is not None and conv[1] != channels:
            return ValueError(f"{name}: image has {channels} channel(s); the model's first "
                              f"convolution ({conv[0]}) expects {conv[1]}; the model said: {said}")
        side = self._smallest_side(channels, len(spatial), min(spatial))
        if side is not None:
            sizes = " x ".join(map(str, spatial))
            unit, shape, blank = (("pixels", "square", "images") if len(spatial) == 2
                                  else ("voxels", "cube", "volumes"))
            smallest = " x ".join([str(side)] * len(spatial))
            return ValueError(f"{name}: {sizes} {unit} is too small for the model; the smallest "
                              f"{shape} it runs on is {smallest} {unit} (found with blank "
                              f"{blank}); the model said: {said}")
        return ValueError(f"{name}: the model failed on an image of shape "
                          f"{tuple(image.shape)}: {said}")

    def _smallest_side(self, channels: int, dims: int, side: int) -> int | None:
        """The smallest square (cube) side above ``side`` on which the model runs on blank
        inputs (doubling, then bisecting: at most about 2 log2(limit) passes); None when it
        runs on ``side`` already (size is not the problem) or on no side up to the limit
        (1024 pixels in 2-D, 128 voxels in 3-D)."""
        limit = 1024 if dims == 2 else 128

        def runs(size: int) -> bool:
            try:
                with torch.no_grad():
                    self._forward(torch.zeros(1, channels, *([size] * dims), device=self.device))
            except Exception:  # noqa: BLE001 - any failure means it does not run
                return False
            return True

        if side > limit or runs(side):
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
        size = tuple(inputs.shape[2:])
        if tuple(out.shape[2:]) != size:
            out = F.interpolate(out, size=size, mode=_UPSAMPLING[len(size)], align_corners=False)
        if self.output == "auto":
            self.output = self._guess_kind(out)
        return out

    def _resized_raw(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """:meth:`raw` upsampled to the input's resolution; decides "auto" on first use."""
        return self._sized(self.raw(inputs, where), inputs)

    def scores(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """Per-class scores (B, K, *S) float32 to differentiate, e.g. for Seg-Grad-CAM.

        Logits as the model gives them; for a model that returns probabilities, their logarithm
        (for sigmoid channels, the log-odds). A one-channel model's foreground logit z is
        class 1's score and -z class 0's.
        """
        out = self._resized_raw(inputs, where)
        if self.output == "probabilities":
            out = out.clamp(1e-7, 1 - 1e-7)
            sigmoid = out.shape[1] == 1 or self.multilabel
            out = torch.log(out / (1 - out)) if sigmoid else torch.log(out)
        return torch.cat([-out, out], dim=1) if out.shape[1] == 1 else out

    def __call__(self, inputs: torch.Tensor, where: str | None = None) -> torch.Tensor:
        """Per-class probabilities (B, K, *S) float32, K >= 2, at the input's resolution.

        ``where`` (e.g. "in batch 3") completes the message when the output holds NaN or inf.
        """
        return self._probabilities(self._resized_raw(inputs, where))

    def _probabilities(self, out: torch.Tensor) -> torch.Tensor:
        logits = self.output == "logits"
        if out.shape[1] == 1:
            foreground = torch.sigmoid(out) if logits else out
            return torch.cat([1 - foreground, foreground], dim=1).contiguous()
        if self.multilabel:
            return (torch.sigmoid(out) if logits else out).contiguous()
        # contiguous: a channels-last output makes reductions over classes (argmax) very slow
        return (torch.softmax(out, dim=1) if logits else out).contiguous()

    def segment(self, probabilities: torch.Tensor, class_index: int) -> torch.Tensor:
        """The segment of ``class_index``: bool (B, *S) from probabilities (B, K, *S).

        The one definition every method and metric uses: for sigmoid labels
        (``activation="sigmoid"``, K >= 2) ``p_k > 0.5``, each label on its own (segments may
        overlap); for softmax classes where the class is the arg-max (ties to the lower
        index); for a one-channel model, read as ``[1 - p, p]``, class 1 where ``p > 0.5``.
        """
        if self.multilabel and probabilities.shape[1] >= 2:
            return probabilities[:, class_index] > 0.5
        return predicted_mask(probabilities, class_index)

    def _guess_kind(self, out: torch.Tensor) -> str:
        out = out.detach()
        if bool(out.min() < 0) or bool(out.max() > 1):
            return "logits"  # no probability lies outside [0, 1]: not a guess
        softmax = out.shape[1] > 1 and not self.multilabel
        if softmax:
            if torch.allclose(out.sum(1), torch.ones((), device=out.device), atol=1e-3):
                return "probabilities"  # softmax channels summing to 1: not a guess either
            if self.activation == "auto":
                warnings.warn("output='auto': the model's outputs all lie in [0, 1] but do not sum to "
                              "1 over the channels, so they are read as logits of softmax classes; "
                              "if they are per-channel probabilities of a multi-label model, pass "
                              "activation='sigmoid' (and output='probabilities'), or "
                              "output='logits' to silence this", UserWarning, stacklevel=5)
            return "logits"
        warnings.warn("output='auto': the model's outputs on the first input all lie in [0, 1], so "
                      "they are read as probabilities; if they are logits pass output='logits' "
                      "(output='probabilities' silences this)", UserWarning, stacklevel=5)
        return "probabilities"
