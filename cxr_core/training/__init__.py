"""Training and evaluation (MONAI networks) on shared data and on user-brought labels.

Never imported on the analysis path. What lives where:

* ``loop``: the one training loop (:func:`~cxr_core.training.loop.train`,
  :class:`~cxr_core.training.loop.TrainConfig`) and ``predict_logits``;
* ``metrics`` (AUC, ROC, operating points, ECE, bootstrap intervals, Dice/IoU) and
  ``calibration`` (Platt scaling, thresholds at a target sensitivity);
* ``provenance``: commit, library versions, dataset citations, and what a retrained
  model carries over from its base card (description, runtime settings);
* ``data``, ``augment``, ``losses``, ``rle``, ``plots``, ``report``: shared pieces;
* per task: ``lung``; ``findings`` (+ ``findings_data``, ``findings_evaluate``);
  ``pneumothorax`` (+ ``pneumothorax_sources``, ``pneumothorax_evaluate``,
  ``pneumothorax_card``).
"""
