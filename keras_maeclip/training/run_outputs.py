"""What a run leaves behind: a preset replaced whole, metrics without hidden NaN.

A run's preset and metrics are what later steps read (`recipes/evaluate.py`,
dashboards). Two rules:

* `save_preset_atomically` writes the new preset beside the old one and
  swaps the folders, so a crash while saving leaves the previous preset
  whole, never half of each.
* `finite_metrics` turns every non-finite number into `None` (JSON `null`;
  `json.dump` would write the non-standard `NaN`) and lists the keys it
  changed under `nonfinite_metrics`, so a reader sees which values diverged.
"""

import math
import os
import shutil

__all__ = ["finite_metrics", "save_preset_atomically"]


def finite_metrics(results):
    """`results` with non-finite floats as `None`, listed in `nonfinite_metrics`.

    Args:
        results: dict of metric name to number (or anything JSON can hold).

    Returns:
        A new dict; `nonfinite_metrics` (sorted names) is added when any
        value was NaN or infinite.

    Example:
    >>> finite_metrics({"loss": float("nan"), "acc": 0.5})
    {'loss': None, 'acc': 0.5, 'nonfinite_metrics': ['loss']}
    """
    clean, bad = {}, []
    for key, value in results.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key] = None
            bad.append(key)
        else:
            clean[key] = value
    if bad:
        clean["nonfinite_metrics"] = sorted(bad)
    return clean


def save_preset_atomically(model, preset_dir):
    """`model.save_to_preset(preset_dir)`, replacing an existing preset whole.

    Args:
        model: a keras-hub task.
        preset_dir: str, the preset folder.

    Example:
    >>> save_preset_atomically  # doctest: +ELLIPSIS
    <function save_preset_atomically at ...>
    """
    preset_dir = os.path.normpath(str(preset_dir))
    incoming, previous = preset_dir + ".incoming", preset_dir + ".previous"
    if os.path.isdir(previous) and not os.path.isdir(preset_dir):
        os.replace(previous, preset_dir)  # a crash between the two renames below
    for leftover in (incoming, previous):
        if os.path.isdir(leftover):
            shutil.rmtree(leftover)
    model.save_to_preset(incoming)
    if os.path.isdir(preset_dir):
        os.replace(preset_dir, previous)
    os.replace(incoming, preset_dir)
    if os.path.isdir(previous):
        shutil.rmtree(previous)
