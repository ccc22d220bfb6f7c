"""`presets` class attribute answered by this library, not keras-hub's registry."""

import copy


class named_presets:
    """Class attribute: the named presets a class builds (keras-hub's `presets`).

    keras-hub's `Backbone.presets` / `Task.presets` read its global registry;
    this descriptor answers from one of `keras_maeclip.models.presets`' dicts instead, as
    `{name: {"metadata": ..., "config": ...}}` (a copy).

    Args:
        registry: name of a dict in `keras_maeclip.models.presets` (`"CLIP_PRESETS"`, ...).

    Example:
    >>> from keras_maeclip.models import CLIP
    >>> "clip_tiny_gap" in CLIP.presets
    True
    """

    def __init__(self, registry):
        self.registry = registry

    def __get__(self, instance, owner):
        from keras_maeclip.models import presets

        return copy.deepcopy(getattr(presets, self.registry))
