"""SlicerCXR engine: chest radiograph reading, segmentation, findings and DICOM writers.

This module is the engine's public surface: the faces (``dicom_node``, ``SlicerCXR``)
import ``cxr_core`` and nothing deeper, so the engine's insides can change without
touching them (``tests/test_public_surface.py`` holds them to it). Names load lazily:
``import cxr_core`` costs nothing; torch comes in with the first name that needs it.

What lives where:

* vocabulary: ``radiograph`` (:class:`Radiograph`), ``analysis`` (:class:`Analysis`),
  ``flags`` (:class:`QualityFlag`), ``terminology`` (every code written);
* ``io/``: readers (radiographs, our SEG) and :class:`RefusedInput`;
* ``engine`` and ``stages/``: :class:`Engine` runs the lungs, findings and pneumothorax
  stages; ``segmentation``, ``preprocess``, ``explain``, ``measure``, ``quality`` serve them;
* ``models/``: model cards (with their schema), networks, the shipped models' folder;
* ``writers/``: DICOM results (SEG, SR, overlay SC), the output folder, the label store;
* ``cli/``: the ``cxr`` command; ``training/``: training and evaluation, never imported
  on the analysis path.

Nothing in ``cxr_core`` imports ``dicom_node`` or ``SlicerCXR``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC: dict[str, str] = {
    # vocabulary
    "Radiograph": "cxr_core.radiograph",
    "PixelSpacing": "cxr_core.radiograph",
    "SpacingSource": "cxr_core.radiograph",
    "CHEST_BODY_PARTS": "cxr_core.radiograph",
    "LATERAL_VIEWS": "cxr_core.radiograph",
    "Analysis": "cxr_core.analysis",
    "Segment": "cxr_core.analysis",
    "Measurement": "cxr_core.analysis",
    "Finding": "cxr_core.analysis",
    "ModelRef": "cxr_core.analysis",
    "QualityFlag": "cxr_core.flags",
    "SEGMENT_TYPES": "cxr_core.terminology",
    "SegmentType": "cxr_core.terminology",
    "FINDING_CODES": "cxr_core.terminology",
    "segment_type_for_codes": "cxr_core.terminology",
    # reading
    "read_radiograph": "cxr_core.io.reader",
    "expand_inputs": "cxr_core.io.reader",
    "IMAGE_SUFFIXES": "cxr_core.io.image_reader",
    "ACCEPTED_SOP_CLASSES": "cxr_core.io.dicom_reader",
    "RefusedInput": "cxr_core.io.errors",
    "check_dicom_decode_limits": "cxr_core.io.limits",
    "check_inflated_size": "cxr_core.io.limits",
    "MAX_DECODED_BYTES": "cxr_core.io.limits",
    "MAX_INFLATED_BYTES": "cxr_core.io.limits",
    "read_seg": "cxr_core.io.seg_reader",
    "SegContent": "cxr_core.io.seg_reader",
    "read_sr": "cxr_core.io.sr_reader",
    "SrContent": "cxr_core.io.sr_reader",
    "SrMeasurement": "cxr_core.io.sr_reader",
    # the engine and its models
    "Engine": "cxr_core.engine",
    "StageError": "cxr_core.engine",
    "DEFAULT_STAGES": "cxr_core.engine",
    "ModelCard": "cxr_core.models.card",
    "default_models_dir": "cxr_core.models.locate",
    # writing
    "build_dicom_results": "cxr_core.writers.dicom",
    "DicomOptions": "cxr_core.writers.dicom",
    "DicomResults": "cxr_core.writers.dicom",
    "build_seg": "cxr_core.writers.seg",
    "write_outputs": "cxr_core.writers.files",
    "WrittenOutputs": "cxr_core.writers.files",
    "safe_folder_name": "cxr_core.writers.files",
    "write_review_layers": "cxr_core.writers.review",
    "ReviewLayers": "cxr_core.writers.review",
    "OUTPUT_KINDS": "cxr_core.writers.outputs",
    "DEFAULT_OUTPUTS": "cxr_core.writers.outputs",
    "is_own_output": "cxr_core.writers.identity",
    "MANUFACTURER": "cxr_core.writers.identity",
    "LabelStore": "cxr_core.writers.labelstore",
    "LabelEntry": "cxr_core.writers.labelstore",
    "image_key": "cxr_core.writers.labelstore",
    "utc_now": "cxr_core.writers.labelstore",
    "REVIEW_CSV": "cxr_core.writers.review_list",
    "ReviewRow": "cxr_core.writers.review_list",
    "read_review": "cxr_core.writers.review_list",
    "review_order": "cxr_core.writers.review_list",
    # training entry points (import the training package, and torch, on first use)
    "train_lung": "cxr_core.training.lung",
    "train_findings": "cxr_core.training.findings",
    "train_pneumothorax": "cxr_core.training.pneumothorax",
}

__all__ = [
    "__version__", "Radiograph", "PixelSpacing", "SpacingSource", "CHEST_BODY_PARTS",
    "LATERAL_VIEWS", "Analysis", "Segment", "Measurement", "Finding", "ModelRef",
    "QualityFlag", "SEGMENT_TYPES", "SegmentType", "FINDING_CODES", "segment_type_for_codes",
    "read_radiograph", "expand_inputs", "IMAGE_SUFFIXES", "ACCEPTED_SOP_CLASSES",
    "RefusedInput", "check_dicom_decode_limits", "check_inflated_size", "MAX_DECODED_BYTES",
    "MAX_INFLATED_BYTES", "read_seg", "SegContent", "read_sr", "SrContent",
    "SrMeasurement", "Engine", "StageError", "DEFAULT_STAGES",
    "ModelCard", "default_models_dir", "build_dicom_results", "DicomOptions", "DicomResults",
    "build_seg", "write_outputs", "WrittenOutputs", "safe_folder_name", "OUTPUT_KINDS",
    "DEFAULT_OUTPUTS", "write_review_layers", "ReviewLayers", "is_own_output",
    "MANUFACTURER", "LabelStore", "LabelEntry", "image_key", "utc_now", "REVIEW_CSV",
    "ReviewRow", "read_review", "review_order", "train_lung",
    "train_findings", "train_pneumothorax",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from cxr_core.writers.identity import software_version

        return software_version()
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'cxr_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and editors: the same names, eagerly
    from cxr_core.analysis import Analysis, Finding, Measurement, ModelRef, Segment
    from cxr_core.engine import DEFAULT_STAGES, Engine, StageError
    from cxr_core.flags import QualityFlag
    from cxr_core.io.dicom_reader import ACCEPTED_SOP_CLASSES
    from cxr_core.io.errors import RefusedInput
    from cxr_core.io.image_reader import IMAGE_SUFFIXES
    from cxr_core.io.limits import (
        MAX_DECODED_BYTES,
        MAX_INFLATED_BYTES,
        check_dicom_decode_limits,
        check_inflated_size,
    )
    from cxr_core.io.reader import expand_inputs, read_radiograph
    from cxr_core.io.seg_reader import SegContent, read_seg
    from cxr_core.io.sr_reader import SrContent, SrMeasurement, read_sr
    from cxr_core.models.card import ModelCard
    from cxr_core.models.locate import default_models_dir
    from cxr_core.radiograph import (
        CHEST_BODY_PARTS,
        LATERAL_VIEWS,
        PixelSpacing,
        Radiograph,
        SpacingSource,
    )
    from cxr_core.terminology import (
        FINDING_CODES,
        SEGMENT_TYPES,
        SegmentType,
        segment_type_for_codes,
    )
    from cxr_core.training.findings import train_findings
    from cxr_core.training.lung import train_lung
    from cxr_core.training.pneumothorax import train_pneumothorax
    from cxr_core.writers.dicom import DicomOptions, DicomResults, build_dicom_results
    from cxr_core.writers.files import WrittenOutputs, safe_folder_name, write_outputs
    from cxr_core.writers.identity import MANUFACTURER, is_own_output
    from cxr_core.writers.labelstore import LabelEntry, LabelStore, image_key, utc_now
    from cxr_core.writers.outputs import DEFAULT_OUTPUTS, OUTPUT_KINDS
    from cxr_core.writers.review import ReviewLayers, write_review_layers
    from cxr_core.writers.review_list import REVIEW_CSV, ReviewRow, read_review, review_order
    from cxr_core.writers.seg import build_seg

    __version__: str
