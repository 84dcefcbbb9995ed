"""Batched augmentation on tensors (fast on 2 CPU cores). No left-right flips: the
models learn laterality from position, so a flip would teach them the wrong side."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxr_core.preprocess import equalize


class RandomAffineIntensity:
    """Random rotation/scale/shift of image and targets together, then gamma, contrast
    and noise on the image alone.

    Parameters
    ----------
    rotate_degrees, scale, shift:
        Ranges of the geometric jitter (shift as a fraction of the half-size).
    gamma:
        Range of the gamma applied to the 0..1 image.
    positive_zoom:
        Probability that a sample whose target is not empty is zoomed in (scale
        ``zoom_scale``) around its lesion, so small lesions fill more of the input
        (positive-aware augmentation; 0 = off).
    detail:
        Range ``[-detail, detail]`` of a per-image blur (< 0) or sharpening (> 0) of fine
        detail, so image sharpness - which differs between data sources - cannot stand
        in for the label (0 = off).
    """

    def __init__(
        self,
        *,
        rotate_degrees: float = 10.0,
        scale: tuple[float, float] = (0.85, 1.15),
        shift: float = 0.08,
        gamma: tuple[float, float] = (0.7, 1.5),
        noise: float = 0.02,
        positive_zoom: float = 0.0,
        zoom_scale: tuple[float, float] = (1.2, 1.8),
        detail: float = 0.0,
    ) -> None:
        self.rotate_degrees = rotate_degrees
        self.scale = scale
        self.shift = shift
        self.gamma = gamma
        self.noise = noise
        self.positive_zoom = positive_zoom
        self.zoom_scale = zoom_scale
        self.detail = detail

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        matrices = self._matrices(images.shape[0], generator)
        if self.positive_zoom:
            matrices = self._zoom_on_positives(matrices, targets, generator)
        grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
        targets = F.grid_sample(targets, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        return self._intensity(images, generator), targets

    def _uniform(self, n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    def _matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        angle = self._uniform(n, -1, 1, generator) * math.radians(self.rotate_degrees)
        scale = self._uniform(n, *self.scale, generator)
        shift = self._uniform(2 * n, -self.shift, self.shift, generator).view(n, 2)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack([
            torch.stack([cos, -sin, shift[:, 0]], dim=1),
            torch.stack([sin, cos, shift[:, 1]], dim=1),
        ], dim=1)

    def _zoom_on_positives(self, matrices: torch.Tensor, targets: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
        """Zoom chosen positive samples about their lesion's centroid, which stays put
        (so the lesion cannot be cropped away)."""
        n, _, rows, columns = targets.shape
        lesion = targets.sum(dim=1)
        mass = lesion.sum(dim=(1, 2))
        chosen = (mass > 0) & (torch.rand(n, generator=generator) < self.positive_zoom)
        if not chosen.any():
            return matrices
        ys = torch.linspace(-1, 1, rows).view(1, rows, 1)
        xs = torch.linspace(-1, 1, columns).view(1, 1, columns)
        centre = torch.stack([(lesion * xs).sum(dim=(1, 2)), (lesion * ys).sum(dim=(1, 2))],
                             dim=1) / mass.clamp(min=1e-6).view(n, 1)
        zoom = self._uniform(n, *self.zoom_scale, generator).view(n, 1)
        zoomed = matrices.clone()
        # input = A x / s + t: keeping x = c fixed needs t = c - A c / s
        zoomed[:, :, :2] = matrices[:, :, :2] / zoom.view(n, 1, 1)
        zoomed[:, :, 2] = centre - (zoomed[:, :, :2] @ centre.unsqueeze(2)).squeeze(2)
        return torch.where(chosen.view(n, 1, 1), zoomed, matrices)

    def _intensity(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        gamma = self._uniform(n, *self.gamma, generator).view(n, 1, 1, 1)
        contrast = self._uniform(n, 0.8, 1.2, generator).view(n, 1, 1, 1)
        brightness = self._uniform(n, -0.1, 0.1, generator).view(n, 1, 1, 1)
        images = images.clamp(0, 1) ** gamma
        images = (images - 0.5) * contrast + 0.5 + brightness
        if self.detail:
            amount = self._uniform(n, -self.detail, self.detail, generator).view(n, 1, 1, 1)
            smooth = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            images = images + amount * (images - smooth)
        noise = torch.randn(images.shape, generator=generator) * self.noise
        return (images + noise).clamp(0, 1)


Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator],
                   tuple[torch.Tensor, torch.Tensor]]
"""``(images, targets, generator) -> (images, targets)`` on a batch."""


class Chain:
    """Apply augmentations in order."""

    def __init__(self, *steps: Augment) -> None:
        self.steps = steps

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for step in self.steps:
            images, targets = step(images, targets, generator)
        return images, targets


class LesionSwap:
    """Move lesion regions between images so the image source cannot stand in for the label.

    When the positives all come from one source (e.g. SIIM-ACR) and the negatives from
    another (NIH), a network can score the source. This breaks that link both ways:

    - a drawn *negative* gets the lesion region of a random positive from ``positives``
      (and that lesion as its target): a positive from the negatives' source;
    - a drawn *positive* gets its lesion region covered by the same region of a random
      image from ``negatives`` (and an empty target): a negative from the positives' source.

    The region is the lesion grown by ``margin`` pixels (so the pleural line goes with
    it), blended in over ``feather`` more pixels; the pasted patch is shifted so its
    ring of surrounding pixels matches the receiving image's in mean intensity.

    Parameters
    ----------
    positives, negatives:
        Donor images ``(N, 1, H, W)`` in 0..1; ``positives`` with their targets.
    positive_targets:
        Lesion targets of ``positives``, ``(N, 1, H, W)`` in 0..1.
    to_positive, to_negative:
        Probability that a drawn negative / positive is swapped (0 = off).
    """

    def __init__(self, *, positives: torch.Tensor, positive_targets: torch.Tensor,
                 negatives: torch.Tensor, to_positive: float = 0.3, to_negative: float = 0.3,
                 margin: int = 4, feather: int = 4) -> None:
        if positives.shape != positive_targets.shape:
            raise ValueError(f"positive_targets: shape {tuple(positive_targets.shape)} != "
                             f"positives {tuple(positives.shape)}")
        for name, value in (("to_positive", to_positive), ("to_negative", to_negative)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {value}")
        self.positives, self.positive_targets = positives, positive_targets
        self.negatives = negatives
        self.to_positive, self.to_negative = to_positive, to_negative
        self.margin, self.feather = margin, feather

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if not len(self.positives) or not len(self.negatives):
            return images, targets
        images, targets = images.clone(), targets.clone()
        n = images.shape[0]
        positive = targets.flatten(1).amax(dim=1) > 0.5
        draw = torch.rand(n, generator=generator)
        gain = (~positive & (draw < self.to_positive)).nonzero()[:, 0]
        if len(gain):
            donor = torch.randint(len(self.positives), (len(gain),), generator=generator)
            lesion = self.positive_targets[donor]
            images[gain] = self._paste(images[gain], self.positives[donor], lesion)
            targets[gain] = lesion
        lose = (positive & (draw < self.to_negative)).nonzero()[:, 0]
        if len(lose):
            donor = torch.randint(len(self.negatives), (len(lose),), generator=generator)
            images[lose] = self._paste(images[lose], self.negatives[donor],
                                       targets[lose].amax(dim=1, keepdim=True))
            targets[lose] = 0
        return images, targets

    def _paste(self, receiver: torch.Tensor, donor: torch.Tensor,
               lesion: torch.Tensor) -> torch.Tensor:
        core = _grow(lesion > 0.5, self.margin)
        outer = _grow(core, self.feather)
        alpha = torch.maximum(core.float(), F.avg_pool2d(
            outer.float(), 2 * self.feather + 1, stride=1, padding=self.feather,
            count_include_pad=False))
        ring = (_grow(outer, self.feather) & ~outer).float()
        area = ring.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
        offset = ((receiver - donor) * ring).sum(dim=(1, 2, 3), keepdim=True) / area
        return (receiver * (1 - alpha) + (donor + offset) * alpha).clamp(0, 1)


def _grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary dilation by a square of half-size ``pixels``."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels) > 0.5


class SourceStyle:
    """Make one hospital's encoding look like another's: per image, a random loss of
    resolution (down- then up-sampling), blur, noise and JPEG re-encoding, then (when the
    model's normalisation is ``equalize``) the rank normalisation the engine applies, so
    the network sees what it will see from a degraded source.

    Parameters
    ----------
    probability:
        Share of images restyled; the others pass unchanged.
    downscale:
        Range of the resolution kept (1 = none lost; 0.25 = a 224 grid from 56 px).
    blur:
        Largest Gaussian sigma, in network-grid pixels.
    noise:
        Largest Gaussian noise standard deviation (on 0..1).
    jpeg_quality:
        Range of JPEG qualities; each restyled image is re-encoded at one of them.
    equalize:
        Re-apply :func:`cxr_core.preprocess.equalize` afterwards.
    """

    def __init__(self, *, probability: float = 0.8, downscale: tuple[float, float] = (0.25, 1.0),
                 blur: float = 1.5, noise: float = 0.03,
                 jpeg_quality: tuple[int, int] = (30, 95), equalize: bool = True) -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"probability: expected 0..1, got {probability}")
        if not 0 < downscale[0] <= downscale[1] <= 1:
            raise ValueError(f"downscale: expected 0 < low <= high <= 1, got {downscale}")
        if not 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality: expected 1 <= low <= high <= 100, got {jpeg_quality}")
        self.probability, self.downscale, self.blur = probability, downscale, blur
        self.noise, self.jpeg_quality, self.equalize = noise, jpeg_quality, equalize

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = torch.rand(images.shape[0], generator=generator) < self.probability
        out = images.clone()
        for index in torch.nonzero(chosen).flatten().tolist():
            out[index] = self._restyle(images[index], generator)
        if self.equalize:
            out = equalize(out)  # the engine's own normalisation, after the damage
        return out, targets

    def _restyle(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One ``(1, h, w)`` image, restyled."""
        def draw(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand(1, generator=generator))

        size = image.shape[-2:]
        keep = draw(*self.downscale)
        small = [max(8, round(side * keep)) for side in size]
        image = F.interpolate(image[None], size=small, mode="bilinear", antialias=True,
                              align_corners=False)
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)[0]
        sigma = draw(0.0, self.blur)
        if sigma > 0.3:
            image = _gaussian_blur(image, sigma)
        image = image + torch.randn(image.shape, generator=generator) * draw(0.0, self.noise)
        quality = round(draw(*self.jpeg_quality))
        return _jpeg(image.clamp(0, 1), quality)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``(1, h, w)`` image (replicated edges)."""
    radius = max(1, math.ceil(2.5 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1))[0]


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip a ``(1, h, w)`` 0..1 image through 8-bit baseline JPEG at ``quality``."""
    pixels = (image[0].numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer), dtype=np.float32) / 255.0
    return torch.from_numpy(decoded)[None]
