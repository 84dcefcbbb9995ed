"""SlicerCXR DICOM node: receive chest radiographs, answer with DICOM-SEG and TID 1500 SR.

One module per concern: ``config`` (TOML + flags, validated), ``scp`` (C-STORE in),
``spool`` (durable files), ``store`` (SQLite study/job/delivery state), ``worker`` (jobs,
analysis through the engine), ``sender`` (C-STORE out, retries, dead letters), ``health``
and ``metrics`` (HTTP), ``logs`` (JSON logs without patient data), ``node`` (wiring) and
``cli`` (``cxr-node``). See ``dicom_node/README.md``.

Imports: the engine only through ``cxr_core``'s public surface (``import cxr_core``);
nothing imports ``dicom_node`` except its own CLI and tests.
"""
