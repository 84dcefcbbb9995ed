"""Which instances are analysed, and which SOP classes are offered at association."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_node.config import Filters, config_from_mapping
from dicom_node.metrics import Metrics
from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
from dicom_node.worker import filter_reason

CR = "1.2.840.10008.5.1.4.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _header(**values: str) -> pydicom.Dataset:
    header = pydicom.Dataset()
    for keyword, value in {"Modality": "CR", "BodyPartExamined": "CHEST", **values}.items():
        setattr(header, keyword, value)
    return header


@pytest.mark.parametrize(("values", "sop_class", "filters", "expected"), [
    ({}, CR, Filters(), None),
    ({"BodyPartExamined": ""}, CR, Filters(), None),  # absent body part is allowed
    ({"Manufacturer": "SlicerCXR"}, CR, Filters(), "own output"),
    ({}, CT, Filters(), "SOP class CT Image Storage is not processed"),
    ({"Modality": "MG"}, CR, Filters(), "modality not processed"),
    ({"BodyPartExamined": "KNEE"}, CR, Filters(), "body part not chest"),
    ({"ViewPosition": "LL"}, CR, Filters(views=("PA", "AP")), "view not processed"),
    ({"ViewPosition": "PA"}, CR, Filters(views=("PA", "AP")), None),
    ({"Modality": "OT"}, CR, Filters(modalities=()), None),  # empty list: any
])
def test_filter_reason(values: dict, sop_class: str, filters: Filters,
                       expected: str | None) -> None:
    reason = filter_reason(_header(**values), sop_class, filters)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


@pytest.mark.parametrize("policy", ["ignore", "refuse"])
def test_other_sop_classes_offered_only_when_ignored(tmp_path: Path, policy: str) -> None:
    config = config_from_mapping({"security": {"allowed_ae_titles": ["PACS"]},
                                  "node": {"storage": str(tmp_path)},
                                  "filters": {"other_instances": policy}})
    scp = StorageSCP(config=config, spool=Spool(root=tmp_path),
                     store=Store(path=tmp_path / "db.sqlite"), metrics=Metrics())
    offered = {str(c.abstract_syntax) for c in scp.build_ae().supported_contexts}
    assert CR in offered
    assert (CT in offered) == (policy == "ignore")
    if policy == "refuse":
        assert len(offered) == 5  # Verification + CR, DX, DX for processing, SC
