"""SlicerCXR DICOM node: receive chest radiographs, answer with DICOM-SEG and TID 1500 SR.

See ``dicom_node/README.md``; the entry point is ``cxr-node`` (:mod:`dicom_node.cli`).
"""
