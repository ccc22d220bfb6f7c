"""How often the masked view sees an object: exact shares against hand counts and the real masking."""

import keras
import numpy as np
import pytest

from keras_maeclip.data import synthetic
from keras_maeclip.evaluation.visibility import object_visibility, patches_touched, synthetic_visibility
from keras_maeclip.layers import random_masking


def hand_scene():
    # 8x8 pixels, 2-pixel patches (a 4x4 grid of 16). Object 0: a 3x3 block
    # from (1, 1) to (3, 3) touches patches (0,0), (0,1), (1,0), (1,1);
    # object 1: one pixel, one patch; object 2: absent.
    masks = np.zeros((3, 8, 8), "uint8")
    masks[0, 1:4, 1:4] = 1
    masks[1, 6, 7] = 1
    return masks


def test_patches_touched_and_exact_shares_of_a_hand_made_scene():
    masks = hand_scene()
    assert patches_touched(masks, 2).tolist() == [4, 1, 0]
    result = object_visibility(masks, 2, mask_ratio=0.75)  # 4 of 16 patches kept
    # All 4 kept patches miss the object: C(12, 4) / C(16, 4) = 495 / 1820;
    # the one-patch object is missed with probability 12 / 16.
    expected = ((1 - 495 / 1820) + (1 - 12 / 16)) / 2
    assert result["visible"] == pytest.approx(expected, abs=1e-12)
    assert result["invisible"] == pytest.approx(1 - expected, abs=1e-12)
    assert (result["objects"], result["num_patches"], result["patches_touched"]) == (2, 16, 2.5)
    # Nothing masked: always visible; an object wider than the masked share: always.
    assert object_visibility(masks, 2, mask_ratio=0.0)["visible"] == 1.0
    wide = np.zeros((1, 8, 8)); wide[0, :6] = 1  # 12 of 16 patches: 1 / C(16, 4) to miss
    assert object_visibility(wide, 2, mask_ratio=0.75)["visible"] == pytest.approx(1 - 1 / 1820)
    wide[0, 7, 0] = 1  # 13 of 16: fewer than 4 patches off the object, so a kept one hits it
    assert object_visibility(wide, 2, mask_ratio=0.75)["visible"] == 1.0


def test_exact_share_matches_the_library_random_masking():
    # The masking the models use, on this backend: how often does a kept
    # patch land on the 4-patch object? 4000 draws; 4 standard errors ≈ 0.028.
    touched = np.zeros(16, bool)
    touched[[0, 1, 4, 5]] = True
    tokens = keras.ops.convert_to_tensor(np.tile(np.arange(16, dtype="float32")[None, :, None], (4000, 1, 1)))
    mask = keras.ops.convert_to_numpy(random_masking(tokens, 0.75, keras.random.SeedGenerator(0))["mask"])
    seen = ((mask == 0) & touched).any(axis=1).mean()
    assert seen == pytest.approx(object_visibility(hand_scene()[:1], 2, 0.75)["visible"], abs=0.03)


def test_bad_inputs_get_one_clear_line():
    with pytest.raises(ValueError, match="do not split into 3-pixel patches"):
        patches_touched(hand_scene(), 3)
    with pytest.raises(ValueError, match="every mask is empty"):
        object_visibility(np.zeros((2, 8, 8)), 2)
    with pytest.raises(ValueError, match=r"mask_ratio=1.0 must be in \[0, 1\)"):
        object_visibility(hand_scene(), 2, 1.0)


def test_large_synthetic_objects_stay_visible_where_the_default_scenes_do_not():
    # The setting of docs/study.md: 48² scenes of large objects, 4-pixel patches.
    default = synthetic_visibility(32, 4, 0.75, examples=300)
    visible = synthetic_visibility(48, 4, 0.75, examples=300, sizes=("large",))
    assert default["visible"] < 0.8 < 0.95 < visible["visible"]


def test_scene_sizes_option():
    large = [synthetic.generate_example(i, seed=3, image_size=48, sizes=("large",)) for i in range(20)]
    assert all(int(ex["size"]) == synthetic.SIZES.index("large") for ex in large)
    # Both sizes (the default) draw exactly the scenes drawn before the option.
    for i in range(5):
        a, b = synthetic.generate_example(i, seed=3, image_size=32), synthetic.generate_example(
            i, seed=3, image_size=32, sizes=("large", "small"))
        assert a["caption"] == b["caption"] and (a["image"] == b["image"]).all()
    assert synthetic.captions(3, seed=3, sizes=("large",)) == [ex["caption"] for ex in large[:3]]
    with pytest.raises(ValueError, match="sizes=\\('huge',\\): use a non-empty subset"):
        synthetic.generate_example(0, sizes=("huge",))
