"""Class activation maps are Grad-CAM for our classifiers' GAP + linear head, from the
forward pass alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM

from cxr_core.explain import ClassActivationMaps
from cxr_core.models import build_network
from cxr_core.training.findings import NETWORK


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("DenseNet", NETWORK | {"out_channels": 3}).eval()


def test_class_activation_map_equals_grad_cam(network) -> None:
    inputs = torch.rand(1, 1, 96, 96)
    maps = ClassActivationMaps(network)
    forward = maps.forward(inputs)
    with torch.no_grad():
        assert torch.allclose(forward.logits, network(inputs)[0], atol=1e-5)
    # MONAI's default post-processing maps (min, max) to (1, 0): it flips the map, which
    # is how the old Grad-CAM path came to show where the model looked least. Unflipped:
    grad_cam = GradCAM(nn_module=network, target_layers="class_layers.relu",
                       postprocessing=lambda maps: maps)
    for index in range(3):
        expected = grad_cam(inputs.clone(), class_idx=index)  # (1, 1, 96, 96)
        expected = F.interpolate(expected.detach().float(), size=(40, 30), mode="bilinear",
                                 align_corners=False)[0, 0].numpy()
        expected = (expected - expected.min()) / max(float(np.ptp(expected)), 1e-8)
        ours = maps.heatmap(forward, index, (40, 30))
        assert ours.shape == (40, 30) and ours.dtype == np.float32
        assert np.abs(ours - expected).mean() < 0.02, index
        peak = np.array(np.unravel_index(ours.argmax(), ours.shape))
        expected_peak = np.array(np.unravel_index(expected.argmax(), expected.shape))
        assert np.abs(peak - expected_peak).max() <= 2  # the two resize paths differ slightly


def test_class_activation_maps_name_a_bad_layer(network) -> None:
    with pytest.raises(ValueError, match="target_layer"):
        ClassActivationMaps(network, target_layer="nope")
    with pytest.raises(ValueError, match="output_layer"):
        ClassActivationMaps(network, output_layer="class_layers.relu")
    with pytest.raises(ValueError, match="network_input"):
        ClassActivationMaps(network).forward(torch.rand(2, 1, 32, 32))
