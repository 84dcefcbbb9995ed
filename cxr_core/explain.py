"""Where a classifier looked: class activation maps at the radiograph's source resolution.

Our classifiers end ``features -> ReLU -> global average pool -> linear``. For such a head
Grad-CAM's channel weights (the spatial mean of the class score's gradient) are the linear
layer's weights divided by the map's area, so Grad-CAM equals the class activation map
``ReLU(sum_k w_ck A_k)`` up to scale. The map is therefore read off the forward pass that
computes the probabilities: every label's map costs one weighted sum, no backward pass.

A :class:`HeatMap` keeps that sum on the feature grid (7x7) and where it lands on the
image; the map at source resolution is made only when someone reads it (the heat-map
PNGs and SEG, Slicer), once. What the engine and the overlay need (lung zones, the tint)
is read off a subsampled grid, computed from the 7x7 map directly: a 2k radiograph with
ten positive findings no longer makes ten 3.6-megapixel maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from cxr_core.models.networks import network_device

# MONAI's DenseNet ends features -> class_layers.relu -> pool -> flatten -> out.
DENSENET_TARGET_LAYER = "class_layers.relu"
DENSENET_OUTPUT_LAYER = "class_layers.out"


@dataclass(frozen=True)
class Forward:
    """One forward pass: the logits ``(labels,)`` and the target layer's activations
    ``(channels, h, w)``, both on the CPU."""

    logits: torch.Tensor
    activations: torch.Tensor


class ClassActivationMaps:
    """Logits and per-label heat maps of a GAP + linear classifier from one forward pass.

    Parameters
    ----------
    network:
        The classifier (in eval mode).
    target_layer:
        Dotted name of the last spatial activation (before the global average pool).
    output_layer:
        Dotted name of the final ``torch.nn.Linear`` whose weights make the maps.
    """

    def __init__(self, network: torch.nn.Module, target_layer: str = DENSENET_TARGET_LAYER,
                 output_layer: str = DENSENET_OUTPUT_LAYER) -> None:
        modules = dict(network.named_modules())
        if target_layer not in modules:
            raise ValueError(f"target_layer: {target_layer!r} is not a layer of the network")
        output = modules.get(output_layer)
        if not isinstance(output, torch.nn.Linear):
            raise ValueError(f"output_layer: {output_layer!r} is not a linear layer of the "
                             "network (class activation maps need a GAP + linear head)")
        self.network = network
        self.layer = modules[target_layer]
        self.weights = output.weight

    def forward(self, network_input: torch.Tensor) -> Forward:
        """Logits and activations of a ``(1, 1, h, w)`` input."""
        if network_input.ndim != 4 or network_input.shape[0] != 1:
            raise ValueError(f"network_input: expected shape (1, 1, h, w), got "
                             f"{tuple(network_input.shape)}")
        captured: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(
            lambda _module, _inputs, output: captured.append(output))
        try:
            with torch.inference_mode():
                logits = self.network(network_input.to(network_device(self.network)))
        finally:
            handle.remove()
        return Forward(logits[0].float().cpu(), captured[0][0].float().cpu())

    def heatmap(self, forward: Forward, class_index: int, shape: tuple[int, int]) -> np.ndarray:
        """The map of ``class_index`` resized to ``shape``, float32 scaled 0..1 on its own
        (it says *where* the model looked, not *how much*: the probability does)."""
        return self.maps(forward, [class_index], shape)[0].full()

    def maps(self, forward: Forward, class_indices: list[int], shape: tuple[int, int],
             *, mirrored: bool = False) -> list[HeatMap]:
        """The (lazy) maps of ``class_indices`` for an image of ``shape``, read off the
        feature map (nothing at ``shape`` is made until asked); ``mirrored``: the network
        saw the image flipped left-right, and the maps are flipped back."""
        if not class_indices:
            return []
        with torch.inference_mode():
            weights = self.weights.detach().float().cpu()
            # one small product per label (10 x 7x7): a batched one rounds differently
            cams = [torch.relu(torch.einsum("k,khw->hw", weights[index], forward.activations))
                    for index in class_indices]
        return [HeatMap(cam, shape, mirrored=mirrored) for cam in cams]

    def __call__(self, network_input: torch.Tensor, class_index: int,
                 shape: tuple[int, int]) -> np.ndarray:
        """The map of ``class_index`` for a ``(1, 1, h, w)`` input (one forward pass)."""
        return self.heatmap(self.forward(network_input), class_index, shape)


@dataclass(frozen=True, eq=False)
class HeatMap:
    """One class activation map on the feature grid, and the image grid it is read on.

    The map at the image's resolution (:meth:`full`) is the feature-grid map resized
    bilinearly (PyTorch, ``align_corners=False``) to ``shape``, scaled 0..1 by its own
    minimum and maximum, flipped back when ``mirrored``, and pasted at ``box`` into a
    zero image of ``received`` shape when the engine had cropped a frame away.
    ``map[::step, ::step]`` gives the same values (to float32 rounding) without making
    the full map, and ``map.shape`` its shape.
    """

    cam: torch.Tensor
    """``(h, w)`` float32, ReLU of the weighted sum of the feature maps."""
    image_shape: tuple[int, int]
    """The grid the network's input was made from."""
    mirrored: bool = False
    box: tuple[slice, slice] | None = None
    received: tuple[int, int] | None = None
    _cache: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """The shape of :meth:`full`."""
        return self.received if self.box is not None and self.received else self.image_shape

    @property
    def ndim(self) -> int:
        return 2

    def pasted(self, box: tuple[slice, slice] | None, received: tuple[int, int]) -> HeatMap:
        """This map placed at ``box`` in a zero image of ``received`` shape."""
        if box is None:
            return self
        return replace(self, box=box, received=received, _cache={})

    def full(self) -> np.ndarray:
        """The map at source resolution, float32 0..1 (made on first use, then kept)."""
        if "full" not in self._cache:
            with torch.inference_mode():
                full = F.interpolate(self.cam[None, None], size=self.image_shape,
                                     mode="bilinear", align_corners=False)[0, 0]
            low, high = float(full.min()), float(full.max())
            scaled = ((full - low) / max(high - low, 1e-8)).numpy().astype(np.float32)
            if self.mirrored:
                scaled = np.ascontiguousarray(scaled[:, ::-1])
            if self.box is not None and self.received is not None:
                pasted = np.zeros(self.received, dtype=scaled.dtype)
                pasted[self.box] = scaled
                scaled = pasted
            self._cache["full"] = scaled
        return self._cache["full"]

    def __getitem__(self, index: tuple[slice, slice]) -> np.ndarray:
        """``map[::step, ::step]`` (positive steps, no start or stop): the subsampled map,
        from the full map if it was made, otherwise from the feature grid."""
        rows, columns = index
        steps = (rows.step or 1, columns.step or 1)
        if (rows.start, rows.stop, columns.start, columns.stop) != (None,) * 4 or min(steps) < 1:
            raise IndexError("a heat map is read as map[::step, ::step] only")
        if "full" in self._cache:
            return self._cache["full"][index]
        return self._sampled(*steps)

    def _sampled(self, row_step: int, column_step: int) -> np.ndarray:
        out_rows = np.arange(0, self.shape[0], row_step)
        out_columns = np.arange(0, self.shape[1], column_step)
        values = np.zeros((out_rows.size, out_columns.size), dtype=np.float32)
        top, left = ((self.box[0].start or 0, self.box[1].start or 0) if self.box is not None
                     else (0, 0))
        rows = out_rows - top
        columns = out_columns - left
        inside_rows = (rows >= 0) & (rows < self.image_shape[0])
        inside_columns = (columns >= 0) & (columns < self.image_shape[1])
        columns = columns[inside_columns]
        if self.mirrored:
            columns = self.image_shape[1] - 1 - columns
        cam, row_weights, column_weights, (low, high) = self._resize_terms()
        sampled = _resize_product(row_weights[rows[inside_rows]], cam, column_weights[columns])
        # float32 arithmetic, as torch does it in full(); numpy, because torch's threads on
        # a busy machine made this elementwise step the slowest part of the overlay
        scaled = ((sampled.astype(np.float32) - np.float32(low))
                  / np.float32(max(high - low, 1e-8)))
        values[np.ix_(inside_rows, inside_columns)] = scaled
        return values


    def _resize_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
        """The map (float64), the row and column resize weights and the extremes of the
        resized map, made once per map (zones and the overlay both read it)."""
        if "cam" not in self._cache:
            cam = self.cam.double().numpy()
            self._cache["cam"] = cam
            self._cache["rows"] = _bilinear_weights(cam.shape[0], self.image_shape[0])
            self._cache["columns"] = _bilinear_weights(cam.shape[1], self.image_shape[1])
            self._cache["extremes"] = np.array(_extremes(cam, self._cache["rows"],
                                                         self._cache["columns"]))
        low, high = self._cache["extremes"]
        return (self._cache["cam"], self._cache["rows"], self._cache["columns"],
                (float(low), float(high)))


def _bilinear_weights(size: int, out: int) -> np.ndarray:
    """``(out, size)``: row ``i`` holds the weights PyTorch's bilinear resize
    (``align_corners=False``) gives the ``size`` source samples for output ``i``; source
    positions computed in float32 as PyTorch does, so the same samples are picked."""
    scale = np.float32(size) / np.float32(out)
    source = np.maximum(scale * (np.arange(out, dtype=np.float32) + np.float32(0.5))
                        - np.float32(0.5), np.float32(0.0))
    first = np.minimum(source.astype(np.int64), size - 1)
    second = np.minimum(first + 1, size - 1)
    fraction = (source - first.astype(np.float32)).astype(np.float64)
    weights = np.zeros((out, size))
    rows = np.arange(out)
    weights[rows, first] = 1.0 - fraction
    weights[rows, second] += fraction  # one index per row: adds where second == first
    return weights


def _extremes(cam: np.ndarray, row_weights: np.ndarray,
              column_weights: np.ndarray) -> tuple[float, float]:
    """Minimum and maximum of the resized map without making it: along each axis the
    resize is linear between two source samples, so over the output grid its extremes lie
    on the first or last output of each such stretch."""
    def ends(weights: np.ndarray) -> np.ndarray:
        pattern = (weights > 0).astype(np.int8)
        change = np.any(pattern[1:] != pattern[:-1], axis=1)
        starts = np.flatnonzero(np.concatenate([[True], change]))
        return np.unique(np.concatenate([starts, np.append(starts[1:] - 1, len(weights) - 1)]))

    candidates = _resize_product(row_weights[ends(row_weights)], cam,
                                 column_weights[ends(column_weights)])
    return float(np.float32(candidates.min())), float(np.float32(candidates.max()))


def _resize_product(row_weights: np.ndarray, cam: np.ndarray,
                    column_weights: np.ndarray) -> np.ndarray:
    """``row_weights @ cam @ column_weights.T``, using that each output row mixes at most
    two neighbouring source rows: two gathers instead of a 7-wide product over the whole
    output, and no BLAS (whose threads, on a busy machine, made it 50x slower)."""
    across = np.einsum("kl,jl->kj", cam, column_weights)  # (source rows, output columns)
    first = np.argmax(row_weights > 0, axis=1)
    second = np.minimum(first + 1, row_weights.shape[1] - 1)
    rows = np.arange(row_weights.shape[0])
    near = row_weights[rows, first]
    far = np.where(second != first, row_weights[rows, second], 0.0)
    product: np.ndarray = near[:, None] * across[first] + far[:, None] * across[second]
    return product
