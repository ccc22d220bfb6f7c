"""The study's variants and how each becomes `recipes/pretrain.py` flags.

A variant is a name and the pretraining flags that make it:

| name                                  | flags                                              |
|---------------------------------------|----------------------------------------------------|
| `clip_<pool>`                         | `--model=clip --pooling=<pool>`                    |
| `flip_<pool>[_ut]`                    | CLIP with `--patch_dropout=0.75` (MAE-CLIP's mask ratio: the masked view without reconstruction) |
| `maeclip_<pool>_<masking>_<view>[_wholetext][_ut]` | `--model=maeclip --pooling=<pool> ...` |
| `m3ae`, `mae`                         | `--model=m3ae`, `--model=mae`                      |

with `<pool>` in `gap`, `max`, `map`; `<view>` in `masked`, `full`
(`--contrastive_view`); `<masking>` in `random` and, when the
pretraining script defines `--similarity_direction`, `masksimilar` /
`keepsimilar` (`--masking=similarity
--similarity_direction=mask_similar|keep_similar`), else `similarity`
(`--masking=similarity`, the library's one direction). `_wholetext` adds
`--contrastive_text_view=full` (the contrastive text embedding from the
whole caption); `_ut` ends the run with unmasked tuning
(`--unmasked_tuning_steps`, `UNMASKED_TUNING_FRACTION` of the steps: whole
images and captions, contrastive loss only). Both need a pretraining
script that defines `--contrastive_text_view`.

The controls that attribute a gap between CLIP and MAE-CLIP: `flip_<pool>`
against `clip_<pool>` is the masked view alone; `maeclip_..._masked`
against `flip_<pool>` adds the reconstruction; `_full` and `_ut` take the
view back; `_wholetext` takes the masked captions out.

Nothing here imports keras: the study process only launches runs and
reads their results.

References:
    Weers et al., arXiv 2301.07836: CLIP and MAE-CLIP with GAP / MAX / MAP
    pooling, random and similarity masking; M3AE (Geng et al., arXiv
    2205.14204); MAE (He et al., arXiv 2111.06377).
"""

import dataclasses
import fnmatch
import re

POOLINGS = ("gap", "max", "map")
VIEWS = ("masked", "full")
# Masking name -> pretrain flags; the direction ones need --similarity_direction.
MASKINGS = {
    "random": ("--masking=random",),
    "similarity": ("--masking=similarity",),
    "masksimilar": ("--masking=similarity", "--similarity_direction=mask_similar"),
    "keepsimilar": ("--masking=similarity", "--similarity_direction=keep_similar"),
}
DIRECTION_FLAG = "similarity_direction"
TEXT_VIEW_FLAG = "contrastive_text_view"
# FLIP's patch dropout at MAE-CLIP's image mask ratio.
FLIP_PATCH_DROPOUT = 0.75
# Share of a run's steps spent in unmasked tuning by the `_ut` variants (the
# library's choice: FLIP tunes for a small share of its schedule).
UNMASKED_TUNING_FRACTION = 0.1

# Evaluations of the suite (keras_maeclip.evaluation.suite.EVALUATIONS order)
# that take each `--model`; tests check this against the suite's own table.
EVALUATIONS = ("zero_shot", "retrieval", "linear_probe", "vqa", "segmentation", "grounding", "reconstruction")
_EVALUATIONS_BY_MODEL = {
    "clip": ("zero_shot", "retrieval", "linear_probe", "vqa", "segmentation", "grounding"),
    "maeclip": EVALUATIONS,
    "m3ae": ("vqa", "reconstruction"),
    "mae": ("linear_probe", "reconstruction"),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model configuration of the study.

    Attributes:
        name: the variant's name (see the module docstring).
        model: `--model` of `recipes/pretrain.py`.
        flags: the pretraining flags that make it, `--model` included.
    """

    name: str
    model: str
    flags: tuple
    unmasked_tuning: bool = False

    def pretrain_flags(self, steps):
        """`flags` plus `--unmasked_tuning_steps` for a run of `steps` steps.

        Example:
        >>> Variant("flip_max_ut", "clip", ("--model=clip",), True).pretrain_flags(600)
        ('--model=clip', '--unmasked_tuning_steps=60')
        """
        if not self.unmasked_tuning:
            return self.flags
        tuning = max(1, int(round(UNMASKED_TUNING_FRACTION * steps)))
        return self.flags + (f"--unmasked_tuning_steps={tuning}",)

    @property
    def evaluations(self):
        """The suite evaluations that take this variant's model."""
        return _EVALUATIONS_BY_MODEL[self.model]


def evaluations_for(model):
    """The suite evaluations, in suite order, that take a `--model` name."""
    if model not in _EVALUATIONS_BY_MODEL:
        raise ValueError(f"Unknown model {model!r}; choose from {sorted(_EVALUATIONS_BY_MODEL)}.")
    return _EVALUATIONS_BY_MODEL[model]


def defined_flags(script):
    """Names of the absl flags a recipe script defines (read from its source).

    Args:
        script: path of a Python file defining flags with `flags.DEFINE_*`.

    Returns:
        A frozenset of flag names.

    Example:
    >>> "steps" in defined_flags("recipes/pretrain.py")  # doctest: +SKIP
    True
    """
    with open(script, encoding="utf-8") as f:
        source = f.read()
    return frozenset(re.findall(r"flags\.DEFINE_\w+\(\s*[\"'](\w+)[\"']", source))


def all_variants(pretrain_flags=None):
    """Every variant of the study, CLIP first, then MAE-CLIP, M3AE and MAE.

    Args:
        pretrain_flags: the flags the pretraining script defines
            (`defined_flags`), or `None` for all. The similarity-direction
            variants are only listed when `--similarity_direction` is one.

    Returns:
        A list of `Variant`.

    Example:
    >>> [v.name for v in all_variants(set())][:4]
    ['clip_gap', 'clip_max', 'clip_map', 'maeclip_gap_random_masked']
    """
    with_direction = pretrain_flags is None or DIRECTION_FLAG in pretrain_flags
    with_text_view = pretrain_flags is None or TEXT_VIEW_FLAG in pretrain_flags
    # With a direction flag, plain "similarity" would repeat its default direction.
    maskings = ["random"] + (["masksimilar", "keepsimilar"] if with_direction else ["similarity"])
    variants = [Variant(f"clip_{p}", "clip", ("--model=clip", f"--pooling={p}")) for p in POOLINGS]
    if with_text_view:
        for pooling in POOLINGS:
            flip = ("--model=clip", f"--pooling={pooling}", f"--patch_dropout={FLIP_PATCH_DROPOUT}")
            variants += [Variant(f"flip_{pooling}", "clip", flip),
                         Variant(f"flip_{pooling}_ut", "clip", flip, unmasked_tuning=True)]
    text_views = [("", ()), ("_wholetext", (f"--{TEXT_VIEW_FLAG}=full",))] if with_text_view else [("", ())]
    tunings = (False, True) if with_text_view else (False,)
    for pooling in POOLINGS:
        for masking in maskings:
            for view in VIEWS:
                for suffix, text_flags in text_views:
                    for tuning in tunings:
                        variants.append(Variant(
                            f"maeclip_{pooling}_{masking}_{view}{suffix}{'_ut' if tuning else ''}", "maeclip",
                            ("--model=maeclip", f"--pooling={pooling}", *MASKINGS[masking],
                             f"--contrastive_view={view}", *text_flags),
                            unmasked_tuning=tuning,
                        ))
    variants += [Variant("m3ae", "m3ae", ("--model=m3ae",)), Variant("mae", "mae", ("--model=mae",))]
    return variants


def select_variants(patterns, pretrain_flags=None):
    """The variants matching any of the names or shell patterns, in grid order.

    Args:
        patterns: names or `fnmatch` patterns (`"clip_*"`,
            `"maeclip_*_random_*"`, `"all"`).
        pretrain_flags: as for `all_variants`.

    Returns:
        A list of `Variant`.

    Raises:
        ValueError: a pattern matches no variant (the message lists them),
            or names a direction variant the pretraining script cannot run.

    Example:
    >>> [v.name for v in select_variants(["clip_m*", "mae"], set())]
    ['clip_max', 'clip_map', 'mae']
    """
    variants = all_variants(pretrain_flags)
    names = [v.name for v in variants]
    chosen = set()
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern:
            continue
        matched = names if pattern == "all" else fnmatch.filter(names, pattern)
        if not matched:
            hint = ""
            if any(m in pattern for m in ("masksimilar", "keepsimilar")):
                hint = (" The similarity-direction variants need a pretraining script with "
                        f"--{DIRECTION_FLAG}, which this one does not define.")
            elif any(m in pattern for m in ("flip", "wholetext", "_ut")):
                hint = (" The FLIP, whole-caption and unmasked-tuning variants need a pretraining "
                        f"script with --{TEXT_VIEW_FLAG}, which this one does not define.")
            raise ValueError(f"--variants: {pattern!r} matches no variant.{hint} Variants: {', '.join(names)}.")
        chosen.update(matched)
    if not chosen:
        raise ValueError("--variants is empty; name at least one variant (or 'all').")
    return [v for v in variants if v.name in chosen]
