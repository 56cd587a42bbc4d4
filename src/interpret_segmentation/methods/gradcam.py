"""Seg-Grad-CAM (Vinogradova et al., 2020): Grad-CAM for a region of a segmentation.

The score explained is the sum of class ``l``'s logits over the target pixels. The feature maps
``A`` (K channels) of a chosen layer are weighted by the spatial mean of the score's gradient
with respect to them and summed over channels; the paper then applies ReLU:

    map = ReLU(sum_k mean_uv(d score / d A_k[u, v]) * A_k)

and the map is upsampled bilinearly to the input size. With ``relu=False`` the signed sum is
kept: its negative part shows where the layer's features speak against the class. Seed 001
uses Seg-Grad-CAM on the bottleneck layer as a baseline for MiSuRe, thresholded at 0.05 and 0.1
of the map's range.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import Explainer, Explanation, Item, ModelAdapter, as_image_batch
from ..core.validate import check_bool, check_finite
from ..models.unet import UNet


def candidate_layers(model: nn.Module, image) -> list[tuple[str, tuple[int, ...]]]:
    """Modules of ``model`` whose output is a feature map, with its shape, in call order.

    Runs ``model`` once on ``image`` ((H, W), (C, H, W) or (1, C, H, W)) with temporary forward
    hooks (removed afterwards, also on error) and lists every named submodule that returned
    a 4-D tensor (1, K, h, w): the layers Seg-Grad-CAM can use.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    batch = as_image_batch(image)
    found: list[tuple[str, tuple[int, ...]]] = []
    handles = []

    def record(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                found.append((name, tuple(output.shape)))
        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(record(name)))
        with torch.no_grad():
            ModelAdapter(model)._forward(batch)  # on the model's device, in its dtype
    finally:
        for handle in handles:
            handle.remove()
    return found


def resolve_layer(model: nn.Module, layer) -> tuple[str, nn.Module]:
    """``layer`` as a module of ``model`` and its dotted name.

    ``layer`` is a submodule, a dotted name such as ``"bottleneck"`` or ``"encoder.3.conv"``,
    or None: the bottleneck of the library's :class:`~interpret_segmentation.models.UNet`.
    """
    names = {module: name for name, module in model.named_modules()}
    if layer is None:
        if isinstance(model, UNet):
            return "bottleneck", model.bottleneck
        raise ValueError(
            "layer: no default for a model that is not the library's UNet; pass a module or a "
            "dotted name (interpret_segmentation.methods.gradcam.candidate_layers(model, image) lists "
            "them)")
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules or not layer:
            shown = ", ".join(name for name in list(modules)[1:12])
            raise ValueError(f"layer: {layer!r} is not a submodule of the model (some names: "
                             f"{shown}, ...)")
        return layer, modules[layer]
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ValueError("layer: the module given is not part of the model")
        return names[layer], layer
    raise TypeError(f"layer: expected a module, a dotted name or None, got {type(layer).__name__}")


def weighted_feature_map(features: torch.Tensor, gradient: torch.Tensor,
                         relu: bool = True) -> torch.Tensor:
    """The Grad-CAM map of feature maps and their gradient, both (B, K, h, w): (B, 1, h, w).

    ``sum_k mean_uv(gradient_k) * features_k``, through ReLU when ``relu`` (default True).
    """
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    layer_map = (weights * features).sum(1, keepdim=True)
    return torch.relu(layer_map) if relu else layer_map


class SegGradCAM(Explainer):
    """Seg-Grad-CAM through the common entry point.

    Parameters
    ----------
    model : nn.Module
    layer : nn.Module, str or None, default None
        The layer whose output feature maps are weighted: a submodule or its dotted name.
        None means ``model.bottleneck`` for the library's UNet (the deepest feature map, after
        the global-context path), and is an error for other models: see
        :func:`candidate_layers`.
    relu : bool, default True
        True: the paper's map, the ReLU of the weighted sum of feature maps (non-negative).
        False: the signed sum, negative where the layer's features lower the score.
    output, device, progress
        As for every explainer; Seg-Grad-CAM runs one forward and one backward pass, on the
        model as built (it never folds BatchNorm).

    The Explanation's ``saliency`` (H, W) is the raw map (not normalised); ``arrays
    ["layer_map"]`` the map at the layer's resolution; ``info["layer"]`` the layer's name,
    ``info["score"]`` the summed logit that was explained, ``info["target_empty"]`` and
    ``info["layer_shape"]``. ``parameters`` records the layer's name and ``relu``.
    """

    method = "gradcam"

    def __init__(self, model, layer=None, relu: bool = True, **options):
        if options.pop("fold_batchnorm", False):
            raise ValueError("fold_batchnorm: Seg-Grad-CAM reads its layer's own output, which "
                             "folding would change; expected False, got True")
        relu = check_bool(relu, "relu")
        super().__init__(model, **options, fold_batchnorm=False)
        self.layer_name, self.layer = resolve_layer(model, layer)
        self.relu = bool(relu)

    def settings(self) -> dict:
        """The method's parameters, as recorded in each Explanation."""
        return {"layer": self.layer_name, "relu": self.relu}

    def _explain(self, item: Item) -> Explanation:
        features, gradient, score = self._features_and_gradient(item)
        layer_map = weighted_feature_map(features, gradient, self.relu)
        saliency = F.interpolate(layer_map, size=item.image.shape[-2:], mode="bilinear",
                                 align_corners=False)
        return self.explanation(
            item, saliency[0, 0],
            arrays={"layer_map": layer_map[0, 0].cpu().numpy().astype(np.float32)},
            info={"layer": self.layer_name, "score": score,
                  "target_empty": not bool(item.target.pixels.any()),
                  "layer_shape": list(features.shape)})

    def _features_and_gradient(self, item: Item) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The layer's output (1, K, h, w), the score's gradient with respect to it (zero for
        an empty target), both float32, and the score."""
        captured = {}

        def keep_output(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                raise ValueError(f"layer: {self.layer_name!r} returned "
                                 f"{getattr(output, 'shape', type(output).__name__)}, expected "
                                 "a feature map (B, K, h, w)")
            captured["features"] = output

        handle = self.layer.register_forward_hook(keep_output)
        try:
            with torch.enable_grad():
                # the input takes part in the graph, so frozen models work as well
                scores = self.model.scores(item.image.detach().clone().requires_grad_(True),
                                           where="on the unperturbed image")
                if "features" not in captured:
                    raise ValueError(f"layer: {self.layer_name!r} was not called by the model's "
                                     "forward pass")
                features = captured["features"]
                pixels = item.target.pixels.to(scores.device, scores.dtype)
                score = (scores[0, item.target.class_index] * pixels).sum()
                if pixels.any():
                    gradient, = torch.autograd.grad(score, features)
                else:
                    gradient = torch.zeros_like(features)
        finally:
            handle.remove()
        # float32 maps whatever the model's precision
        features, gradient = features.detach().float(), gradient.float()
        check_finite(features, f"layer {self.layer_name!r} output")
        check_finite(gradient, f"Seg-Grad-CAM: the gradient of the score with respect to the "
                               f"output of layer {self.layer_name!r}")
        return features, gradient, float(score.detach())
