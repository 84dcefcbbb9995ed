"""Synthetic images that are not chest radiographs, for training and testing the gate.

Each kind stands for something a PACS or a user really sends that is not a frontal chest
radiograph: noise, gradients and test patterns (scanners and QA images), documents (scanned
request forms), shapes, textures, and crude radiographs of other body parts (a limb's
bones in soft tissue). Every image is made from its index alone, so a set is the same on
every machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

Maker = Callable[[np.random.Generator, int], np.ndarray]
SIZE = 384


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size] / size
    return yy.astype(np.float32), xx.astype(np.float32)


def uniform_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.random((size, size), dtype=np.float32)


def smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    sigma = rng.uniform(1, size / 8)
    return np.asarray(ndimage.gaussian_filter(rng.random((size, size)), sigma), np.float32)


def gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    if rng.random() < 0.5:
        return np.asarray(np.cos(angle) * xx + np.sin(angle) * yy, dtype=np.float32)
    centre = rng.uniform(0.2, 0.8, 2)
    return np.asarray(np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2), np.float32)


def pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """Checkerboards, stripes, grids and bars: QA and test patterns."""
    yy, xx = _grid(size)
    period = rng.uniform(0.02, 0.25)
    kind = rng.integers(4)
    if kind == 0:
        return ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        wave = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) / period * np.pi)
        return np.asarray(wave > 0, dtype=np.float32)
    if kind == 2:
        lines = ((xx % period) < period / 8) | ((yy % period) < period / 8)
        return lines.astype(np.float32)
    bars = np.floor(xx * rng.integers(4, 12)) / 12
    return np.asarray(np.where(yy < rng.uniform(0.4, 0.8), bars, 1 - bars), np.float32)


def shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random ellipses and polygons on a plain or noisy ground."""
    image = Image.new("L", (size, size), int(rng.integers(0, 256)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 12))):
        box = sorted(rng.integers(0, size, 2).tolist()), sorted(rng.integers(0, size, 2).tolist())
        corners = [box[0][0], box[1][0], box[0][1] + 2, box[1][1] + 2]
        fill = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            draw.ellipse(corners, fill=fill)
        else:
            points = [tuple(p) for p in rng.integers(0, size, (int(rng.integers(3, 7)), 2))]
            draw.polygon(points, fill=fill)
    pixels = np.asarray(image, dtype=np.float32)
    return pixels + rng.normal(0, rng.uniform(0, 20), pixels.shape).astype(np.float32)


def document(rng: np.random.Generator, size: int) -> np.ndarray:
    """A scanned form: lines of text and boxes on paper."""
    image = Image.new("L", (size, size), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(image)
    size_px = int(rng.integers(8, 20))
    font = ImageFont.load_default(size=size_px)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789:/"))
    y = int(rng.integers(5, 30))
    while y < size - 10:
        text = "".join(rng.choice(letters, int(rng.integers(5, 60))))
        draw.text((int(rng.integers(5, 40)), y), text, fill=int(rng.integers(0, 80)), font=font)
        if rng.random() < 0.15:
            draw.rectangle([10, y - 2, size - 10, y + size_px + 4], outline=0)
        y += size_px + int(rng.integers(4, 16))
    return np.asarray(image, dtype=np.float32)


def limb(rng: np.random.Generator, size: int) -> np.ndarray:
    """A crude radiograph of a limb: one or two bright bones with a cortex and a joint, in
    a soft-tissue band, on a dark background (MONOCHROME2)."""
    yy, xx = _grid(size)
    angle = rng.uniform(-0.6, 0.6)
    along = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)
    across = -np.sin(angle) * (xx - 0.5) + np.cos(angle) * (yy - 0.5)
    if rng.random() < 0.5:  # the limb runs up and down
        along, across = across, along
    tissue = np.exp(-(across / rng.uniform(0.15, 0.3)) ** 4) * rng.uniform(0.25, 0.45)
    image = tissue.astype(np.float32)
    bones = int(rng.integers(1, 3))
    for index in range(bones):
        offset = (index - (bones - 1) / 2) * rng.uniform(0.06, 0.12)
        width = rng.uniform(0.025, 0.06)
        distance = np.abs(across - offset)
        shaft = distance < width
        cortex = shaft & (distance > width * 0.6)
        joint = rng.uniform(-0.2, 0.2)
        head = (along - joint) ** 2 + (across - offset) ** 2 < (width * 1.8) ** 2
        bone = (shaft & (np.abs(along - joint) > 0.02)) | head
        image = image + 0.35 * bone + 0.2 * cortex
    image = ndimage.gaussian_filter(image, rng.uniform(0.5, 2.0))
    return np.asarray(image + rng.normal(0, 0.01, image.shape), dtype=np.float32)


def sparse(rng: np.random.Generator, size: int) -> np.ndarray:
    """Almost uniform: a constant image with a few odd pixels."""
    image = np.full((size, size), rng.uniform(0, 1), dtype=np.float32)
    spots = rng.integers(0, size, (int(rng.integers(5, 60)), 2))
    image[spots[:, 0], spots[:, 1]] = rng.random(len(spots))
    return image


MAKERS: dict[str, Maker] = {
    "uniform_noise": uniform_noise, "smooth_noise": smooth_noise, "gradient": gradient,
    "pattern": pattern, "shapes": shapes, "document": document, "limb": limb,
    "sparse": sparse,
}
"""Every synthetic kind, by name."""


def synthetic_image(kind: str, index: int, size: int = SIZE) -> np.ndarray:
    """Image ``index`` of ``kind`` (float32, any range)."""
    rng = np.random.default_rng([index, sorted(MAKERS).index(kind)])
    return MAKERS[kind](rng, size)
