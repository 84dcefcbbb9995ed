"""The plain-PyTorch networks analysis runs give MONAI's outputs, on the shipped weights
and real images; and analysing an image does not import MONAI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_core import read_radiograph
from cxr_core.models import ModelCard, load_model, model_folder
from cxr_core.models.card import CARD_NAME
from cxr_core.models.plain_nets import PlainDenseNet, PlainUNet, plain_network
from cxr_core.preprocess import ToModelInput
from tests.conftest import DICOM_SAMPLES, RG1_UNCR

MODELS = ("chest_gate", "lung_seg", "findings", "pneumothorax")


@pytest.mark.parametrize("name", MODELS)
def test_plain_network_gives_monais_outputs(name: str) -> None:
    plain, card = load_model(name)
    assert isinstance(plain, PlainUNet | PlainDenseNet)
    monai_network = card.build()
    assert type(monai_network).__module__.startswith("monai.")
    monai_network.load_state_dict(plain.state_dict())  # the same names, strictly
    monai_network.eval()
    method = card.network.normalization.method
    inputs = [ToModelInput(card.input_size, method=method)(read_radiograph(path).pixels)
              for path in (RG1_UNCR, next(DICOM_SAMPLES.glob("siim_*.dcm")))]
    inputs.append(torch.rand(2, 1, *card.input_size, generator=torch.Generator().manual_seed(0)))
    with torch.inference_mode():
        for batch in inputs:
            ours, theirs = plain(batch), monai_network(batch)
            assert ours.shape == theirs.shape
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (
                name, float((ours - theirs).abs().max()))
            if card.task == "segmentation":  # identical masks
                assert torch.equal(torch.sigmoid(ours) > 0.5, torch.sigmoid(theirs) > 0.5)
            else:
                assert np.allclose(torch.sigmoid(ours).numpy(), torch.sigmoid(theirs).numpy(),
                                   atol=1e-4, rtol=0)


def test_other_configurations_get_monais_class() -> None:
    assert plain_network("UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                  "channels": [4, 8], "strides": [2], "num_res_units": 1}) is None
    assert plain_network("UNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1,
                                  "channels": [4, 8], "strides": [2], "act": "relu",
                                  "num_res_units": 1}) is None
    assert plain_network("DenseNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                                      "dropout_prob": 0.2}) is None


def test_analysis_does_not_import_monai() -> None:
    code = ("import sys; from cxr_core import Engine, read_radiograph; "
            f"Engine().analyze(read_radiograph({str(RG1_UNCR)!r})); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('monai', 'matplotlib')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=300)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", MODELS)
def test_loaded_network_is_the_initialised_one_given_its_weights(name: str) -> None:
    """``load_model`` builds the network without memory and hands it the loaded tensors:
    the same parameters (values, dtype, layout, requires_grad) and the same outputs, to the
    bit, as copying the weights into a normally built one."""
    ours, card = load_model(name)
    reference = card.build(inference=True)
    state = torch.load(card_weights(name), map_location="cpu", weights_only=True)
    reference.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
    reference.eval()
    assert type(ours) is type(reference) and not ours.training
    tensors = dict(ours.named_parameters()) | dict(ours.named_buffers())
    expected = dict(reference.named_parameters()) | dict(reference.named_buffers())
    assert tensors.keys() == expected.keys()
    for key, tensor in tensors.items():
        theirs = expected[key]
        assert not tensor.is_meta and tensor.device.type == "cpu", key
        assert (tensor.dtype, tensor.shape, tensor.stride(), tensor.requires_grad) == (
            theirs.dtype, theirs.shape, theirs.stride(), theirs.requires_grad), key
        assert torch.equal(tensor, theirs), key
    batch = torch.rand(2, 1, *card.input_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(ours(batch), reference(batch))


def card_weights(name: str) -> Path:
    folder = model_folder(name)
    return folder / ModelCard.load(folder / CARD_NAME).weights_file
