"""Augmentations for :func:`~interpret_segmentation.training.train`: each takes a batch of
images and targets and a ``torch.Generator`` and returns new ``(images, targets)``, the pair
moved alike. They draw only from the generator they are given (or, given None, torch's global
one)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dihedral_augment", "affine_elastic_augment", "noise_augment"]


def dihedral_augment(images: torch.Tensor, targets: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (image, target) pair turned by the same random one of the 8 symmetries of the
    square (rotations by multiples of 90 degrees, with or without a mirror).

    For square images (B, C, S, S) and targets (B, 1, S, S) whose labels do not depend on
    orientation (Triangle: an equilateral triangle stays one); testnet's left/right layout
    does. Targets that are class labels (B,) stay as they are. Returns new tensors of the
    same shapes.
    """
    def turn(item: torch.Tensor, k: int) -> torch.Tensor:
        if item.ndim < 2:  # a class label: the same for every orientation
            return item
        item = torch.rot90(item, k % 4, (-2, -1))
        return item.flip(-1) if k >= 4 else item

    choices = torch.randint(0, 8, (len(images),), generator=generator).tolist()
    return (torch.stack([turn(x, k) for x, k in zip(images, choices, strict=True)]),
            torch.stack([turn(y, k) for y, k in zip(targets, choices, strict=True)]))


def affine_elastic_augment(images: torch.Tensor, masks: torch.Tensor,
                           generator: torch.Generator | None = None, rotation: float = 180.0,
                           scale: tuple[float, float] = (0.9, 1.1), shift: float = 0.05,
                           elastic: float = 0.03, grid: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine and elastic deformation of images (B, C, H, W) and masks (B, 1, H, W),
    each pair moved alike, as U-Net training does (Ronneberger et al., 2015; seed 003).

    Per pair: rotation uniform in +-``rotation`` degrees, isotropic scale in ``scale``, shift up
    to ``shift`` of the image side, random mirror, plus a smooth displacement field (a
    ``grid`` x ``grid`` grid of normal offsets with standard deviation ``elastic`` of the side,
    upsampled bicubically). Images are resampled bilinearly with zeros outside, masks by
    nearest neighbour. Returns new tensors of the same shapes.
    """
    batch, _, height, width = images.shape

    def uniform(low, high, size=(batch,)):
        return low + (high - low) * torch.rand(size, generator=generator)

    angle = torch.deg2rad(uniform(-rotation, rotation))
    zoom = uniform(*scale)
    mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / zoom * mirror
    theta[:, 0, 1] = -torch.sin(angle) / zoom
    theta[:, 1, 0] = torch.sin(angle) / zoom * mirror
    theta[:, 1, 1] = torch.cos(angle) / zoom
    theta[:, :, 2] = uniform(-2 * shift, 2 * shift, (batch, 2))  # grid units span 2 per side
    sampling = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
    offsets = torch.randn(batch, 2, grid, grid, generator=generator) * 2 * elastic
    sampling = sampling + F.interpolate(offsets, size=(height, width), mode="bicubic",
                                        align_corners=False).permute(0, 2, 3, 1)
    sampling = sampling.to(images.dtype)
    moved = F.grid_sample(images, sampling, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    moved_masks = F.grid_sample(masks.to(images.dtype), sampling, mode="nearest",
                                padding_mode="zeros", align_corners=False)
    return moved, moved_masks.to(masks.dtype)


def noise_augment(images: torch.Tensor, targets: torch.Tensor,
                  generator: torch.Generator | None = None,
                  max_std: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, C, H, W) plus Gaussian white noise whose standard deviation is drawn per
    image uniformly in [0, ``max_std``]; targets unchanged.

    Teaches a network to ignore pixel-level noise, so that what it responds to (and what a
    DeepDream of it draws) is structure. Use ``functools.partial(noise_augment, max_std=...)``
    for another strength.
    """
    std = max_std * torch.rand(len(images), 1, 1, 1, generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    return images + std.to(images.dtype) * noise.to(images.dtype), targets
