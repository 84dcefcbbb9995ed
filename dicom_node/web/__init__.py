"""The node's web face on its HTTP port: STOW-RS in, the analysis API, the review page.

* :mod:`~dicom_node.web.http`: requests, responses and the router the HTTP server calls;
* :mod:`~dicom_node.web.auth`: API tokens (only their hashes are kept) and page sessions;
* :mod:`~dicom_node.web.stow`: ``POST /studies`` (STOW-RS), through the same
  :class:`~dicom_node.ingest.Ingest` as C-STORE;
* :mod:`~dicom_node.web.review`: what the review page reads (studies, their state, the
  per-instance layers) and its retry;
* :mod:`~dicom_node.web.analyze`: ``POST /api/analyze`` (DICOM, PNG or JPEG in, the
  analysis JSON with links to its files out);
* ``static/``: the page itself, shipped with the package (no CDN, works offline).
"""
