"""What users see of runs: live progress, status and runs tables, plots, exports.

``progress`` the live area and the per-trial lines, ``report`` ``nas status`` and ``nas runs``, ``plot`` the
PNG, ``export`` a trial's model in Keras, SavedModel, ONNX or TFLite with its model card. A new view goes here;
the CLI (``nas.cli``) and the Python API (``nas.api``) call them.
"""
