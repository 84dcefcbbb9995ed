"""The node's web face against real clients: dicomweb-client and Orthanc's DICOMweb plugin
push by STOW-RS, the analysis API answers as ``cxr analyze`` does, the review data and
layers, tokens and sessions, and no patient text in the log. One node serves the module
(its engine loads once): the ``web`` fixture in conftest.py, shared with the browser
test."""

from __future__ import annotations

import http.client
import io
import json
import time
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from dicom_node.web.analyze import AnalysisService
from tests.conftest import SHARED_DATA
from tests.node.node_helpers import (
    CR_UNCOMPRESSED,
    DX_NIH,
    EXTREMITY,
    copy_with_new_uids,
    storescu,
    wait_for,
)
from tests.node.web_helpers import WebNode, multipart

MARKER = "ZZQMARKERQZZ"
NIH_PNG = SHARED_DATA / "nih_cxr14_multilabel" / "images" / "00000284_000.png"


def test_without_a_valid_token_nothing_but_the_page_itself(web: WebNode) -> None:
    for method, path in [("GET", "/api/studies"), ("GET", "/api/studies/1"),
                         ("GET", "/api/studies/1/instances/1/radiograph.png"),
                         ("POST", "/api/studies/1/retry"), ("POST", "/studies"),
                         ("POST", "/api/analyze")]:
        for token in (None, "not-a-token"):
            reply = web.call(method, path, token=token, body=b"" if method == "POST" else None)
            assert reply.status == 401, (method, path, reply.status)
            assert reply.json() == {"error": "authentication required"}
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert web.call("GET", "/api/session", token="wrong").json() == {"holder": None}
    page = web.call("GET", "/ui/", token=None)
    assert page.status == 200 and b"AI output, not verified" in page.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert web.call("GET", "/api/openapi.json", token=None).json()["openapi"].startswith("3.")


def test_a_session_cookie_opens_the_api_and_closes_on_sign_out(web: WebNode) -> None:
    assert web.call("POST", "/api/session", token=None, body=b'{"token": "wrong"}').status == 401
    login = web.call("POST", "/api/session", token=None,
                     body=json.dumps({"token": web.token}).encode())
    assert login.status == 200 and login.json() == {"holder": "reviewer"}
    cookie = login.headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in login.headers["Set-Cookie"]
    assert "SameSite=Strict" in login.headers["Set-Cookie"]
    assert web.call("GET", "/api/session", token=None, cookie=cookie).json() == {
        "holder": "reviewer"}
    web.call("DELETE", "/api/session", token=None, cookie=cookie)
    assert web.call("GET", "/api/studies", token=None, cookie=cookie).status == 401


def test_stow_rs_from_dicomweb_client_is_stored_analysed_and_delivered(web: WebNode) -> None:
    path = copy_with_new_uids(DX_NIH, web.root / "stow", PatientName=MARKER,
                              StudyDescription=MARKER)
    dataset = pydicom.dcmread(path)
    client = DICOMwebClient(url=web.url, headers={"Authorization": f"Bearer {web.token}"})
    response = client.store_instances([dataset])
    assert [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence] == [
        str(dataset.SOPInstanceUID)]
    assert "FailedSOPSequence" not in response
    # Success means stored: the spooled file is there before any analysis
    stored = web.node.query("SELECT calling_ae FROM instances WHERE sop_uid = ?",
                            (str(dataset.SOPInstanceUID),))
    assert stored == [("STOW-RS",)]
    web.node.wait_instances({str(dataset.SOPInstanceUID)}, {"processed"}, timeout=240)
    wait_for(lambda: len(web.destination.received()) >= 2, 60, "SEG and SR at the destination")
    log = web.node.log()
    assert MARKER not in log and web.token not in log


def test_stow_rs_answers_per_instance_with_failure_reasons(web: WebNode) -> None:
    new = copy_with_new_uids(DX_NIH, web.root / "per-instance")
    reused = copy_with_new_uids(DX_NIH, web.root / "per-instance-reused")
    first, first_type = multipart([reused.read_bytes()])
    assert web.call("POST", "/studies", body=first, content_type=first_type).status == 200
    other = pydicom.dcmread(reused)
    other.StudyDescription = "other content, same UID"
    buffer = io.BytesIO()
    other.save_as(buffer, enforce_file_format=True)
    body, content_type = multipart([new.read_bytes(), b"not dicom at all",
                                    buffer.getvalue(), reused.read_bytes()])
    reply = web.call("POST", "/studies", body=body, content_type=content_type)
    assert reply.status == 202
    answer = pydicom.Dataset.from_json(reply.json())
    stored = {str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence}
    # the new instance, and the byte-identical resend (Success, nothing written twice)
    assert stored == {new.stem, reused.stem}
    failed = {int(i.FailureReason): str(i.get("ErrorComment", ""))
              for i in answer.FailedSOPSequence}
    assert failed[0xC000] == "not a DICOM Part 10 file"
    assert failed[0xC0D1] == "SOP Instance UID already accepted with other content"
    assert web.node.query("SELECT COUNT(*) FROM instances WHERE sop_uid LIKE ?",
                          (reused.stem + "%",)) == [(1,)]


@pytest.mark.parametrize(("content_type", "body", "status"), [
    ("application/json", b"{}", 415),
    ('multipart/related; type="application/dicom"', b"--x--", 400),
    ('multipart/related; type="image/png"; boundary=x', b"--x--", 415),
])
def test_stow_rs_refuses_malformed_requests_with_a_reason(web: WebNode, content_type: str,
                                                          body: bytes, status: int) -> None:
    reply = web.call("POST", "/studies", body=body, content_type=content_type)
    assert reply.status == status
    assert reply.json()["error"]


def test_stow_rs_bounds_the_body_before_reading_it(web: WebNode) -> None:
    """49 MiB declared against a 48 MiB limit: refused from the headers alone (the body
    is never sent here, so the answer cannot have waited for it)."""
    connection = http.client.HTTPConnection("127.0.0.1", web.node.http_port, timeout=30)
    connection.putrequest("POST", "/studies")
    for name, value in {"Authorization": f"Bearer {web.token}",
                        "Content-Type": 'multipart/related; type="application/dicom"; '
                                        "boundary=x",
                        "Content-Length": str(49 * 2**20)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    reply = connection.getresponse()
    assert reply.status == 413
    assert "larger than 48 MiB" in reply.read().decode()
    connection.close()


def test_orthanc_dicomweb_plugin_pushes_a_study_to_the_node(web: WebNode,
                                                            tmp_path: Path) -> None:
    image = copy_with_new_uids(DX_NIH, tmp_path / "in")
    instance_id = web.orthanc.upload(image)["ID"]
    web.orthanc._request("/dicom-web/servers/cxrnode/stow",
                         json.dumps({"Resources": [instance_id]}).encode())
    web.node.wait_instances({image.stem}, {"received", "processed"}, timeout=60)
    assert web.node.query("SELECT calling_ae FROM instances WHERE sop_uid = ?",
                          (image.stem,)) == [("STOW-RS",)]


def _deliveries(web: WebNode, study_uid: str, destination: str, columns: str) -> list[tuple]:
    """``columns`` of one study's deliveries to ``destination`` (fixed names from tests)."""
    return web.node.query(
        f"SELECT {columns} FROM deliveries d JOIN studies s ON s.id = d.study_id "  # noqa: S608
        "WHERE s.study_uid = ? AND d.destination = ?", (study_uid, destination))


def test_results_go_to_a_dicomweb_destination_exactly_once(web: WebNode,
                                                           tmp_path: Path) -> None:
    image = copy_with_new_uids(CR_UNCOMPRESSED, tmp_path / "out")
    study_uid = str(pydicom.dcmread(image, stop_before_pixels=True).StudyInstanceUID)
    assert storescu([image], web.node.port).returncode == 0
    web.node.wait_instances({image.stem}, {"processed"}, timeout=240)

    def sent_by_stow() -> list[tuple] | None:
        rows = _deliveries(web, study_uid, "web", "d.result_uid, d.state, d.attempts")
        return rows if rows and all(r[1] == "sent" for r in rows) else None
    rows = wait_for(sent_by_stow, 60, "the results sent by STOW-RS")
    assert {r[2] for r in rows} == {0}  # sent at the first attempt, never repeated
    studies = [s for s in web.orthanc.get("/studies?expand")
               if s["MainDicomTags"]["StudyInstanceUID"] == study_uid]
    in_orthanc = {i["MainDicomTags"]["SOPInstanceUID"]
                  for i in web.orthanc.get(f"/studies/{studies[0]['ID']}/instances?expand")}
    assert in_orthanc == {r[0] for r in rows}
    assert len(rows) >= 2  # SEG and SR

    def dead_by_stow() -> list[tuple] | None:
        found = _deliveries(web, study_uid, "webgone", "d.state, d.last_error")
        return found if found and all(r[0] == "dead" for r in found) else None
    dead = wait_for(dead_by_stow, 60, "the unreachable DICOMweb destination's dead letters")
    assert all(error.startswith("no connection") for _, error in dead)


def test_analysis_api_answers_as_the_command_does(web: WebNode) -> None:
    reply = web.call("POST", "/api/analyze", body=CR_UNCOMPRESSED.read_bytes(),
                     content_type="application/dicom")
    assert reply.status == 200, reply.body[:300]
    result = reply.json()
    assert {f["name"] for f in result["analysis"]["findings"]} >= {"abnormal"}
    assert {"overlay", "json", "seg", "sr"} <= set(result["files"])
    overlay = web.call("GET", result["files"]["overlay"])
    assert overlay.status == 200 and overlay.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(overlay.body)).size[0] > 0
    seg = web.call("GET", result["files"]["seg"])
    assert pydicom.dcmread(io.BytesIO(seg.body)).Modality == "SEG"
    assert web.call("GET", result["files"]["overlay"], token=None).status == 401
    assert not list((web.node.storage / "api" / result["id"]).rglob("upload.dcm"))

    refused = web.call("POST", "/api/analyze", body=EXTREMITY.read_bytes(),
                       content_type="application/dicom")
    assert refused.status == 422
    assert refused.json()["error"].startswith("not a chest radiograph")
    wrong = web.call("POST", "/api/analyze", body=b"hello", content_type="text/plain")
    assert wrong.status == 415


def test_analysis_api_takes_png(web: WebNode) -> None:
    reply = web.call("POST", "/api/analyze", body=NIH_PNG.read_bytes(),
                     content_type="image/png")
    assert reply.status == 200
    assert "seg" not in reply.json()["files"]  # DICOM results need a DICOM source


def test_review_data_lists_states_layers_and_retries_dead_letters(web: WebNode) -> None:
    image = copy_with_new_uids(CR_UNCOMPRESSED, web.root / "review")
    assert storescu([image], web.node.port).returncode == 0
    web.node.wait_instances({image.stem}, {"processed"}, timeout=240)

    study_uid = str(pydicom.dcmread(image, stop_before_pixels=True).StudyInstanceUID)
    [(study_id,)] = web.node.query("SELECT id FROM studies WHERE study_uid = ?", (study_uid,))

    def all_dead_lettered() -> dict | None:
        found = web.call("GET", f"/api/studies/{study_id}").json()
        unreachable = [d for d in found["deliveries"] if d["destination"] in ("gone", "webgone")]
        return found if unreachable and all(d["state"] == "dead" for d in unreachable) else None
    detail = wait_for(all_dead_lettered, 60, "the unreachable destinations' dead letters")
    assert detail["state"] == "dead-lettered"
    listed = web.call("GET", "/api/studies").json()["studies"]
    assert next(s for s in listed if s["id"] == study_id)["state"] == "dead-lettered"
    instance = detail["instances"][0]
    assert instance["state"] == "processed"
    assert instance["analysis"]["models"]
    layers = instance["layers"]
    assert {"radiograph", "segment-right_lung", "segment-left_lung"} <= set(layers)
    picture = Image.open(io.BytesIO(web.call("GET", layers["segment-right_lung"]).body))
    assert picture.mode == "RGBA" and picture.getextrema()[3][1] > 0  # something drawn
    assert max(picture.size) <= 1024
    # URLs name the study by number and the image by position, never by a UID
    assert all(image.stem not in url and "1.2." not in url for url in layers.values())
    retried = web.call("POST", f"/api/studies/{study_id}/retry").json()
    assert retried["deliveries"] >= 2
    assert web.call("GET", f"/api/studies/{study_id}/instances/1/../../x.png").status == 404
    assert web.call("GET", f"/api/studies/{study_id}/instances/9/radiograph.png"
                    ).status == 404


def test_analysis_results_expire_after_the_retention(tmp_path: Path) -> None:
    service = AnalysisService(folder=tmp_path / "api", make_engine=lambda: None,  # type: ignore[arg-type, return-value]
                              retention_s=3600, max_upload_bytes=1)
    (tmp_path / "api" / ("a" * 24)).mkdir()
    assert service.expire(now=0) == 0
    assert service.expire(now=time.time() + 3601) == 1
    assert not list((tmp_path / "api").iterdir())
