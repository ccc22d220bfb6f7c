"""keras-hub ViT and BERT backbones as the towers of CLIP and MAE-CLIP."""

import collections

import keras
import keras_hub
import numpy as np

from keras_maeclip.models import CLIP, MAECLIP, CrossModalDecoder, ImageTextBackbone
from keras_maeclip.models.hub_towers import HubBertTower, HubViTTower
from keras_maeclip.models.resolution import resample_positions, with_image_size


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def hub_pair():
    vit = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=1,
                                       num_heads=2, hidden_dim=16, mlp_dim=32)
    bert = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32, max_sequence_length=8)
    return vit, bert


def hub_backbone(vit, bert):
    return ImageTextBackbone(HubViTTower(vit), HubBertTower(bert), embedding_dim=8,
                             image_pooling="gap", text_pooling="first")


def batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "images": rng.normal(size=(n, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(5, 50, (n, 8)).astype("int32"),
        "padding_mask": (np.arange(8)[None] < rng.integers(3, 9, (n, 1))).astype("int32"),
    }


def test_adapters_compute_the_keras_hub_outputs_and_mask_after_positions():
    vit, bert = hub_pair()
    x = batch()
    tower = HubViTTower(vit)
    # Measured max |Δ| = 0 on jax; the split reorders no arithmetic.
    np.testing.assert_allclose(to_np(tower(x["images"])), to_np(vit(x["images"])), atol=1e-6)
    reference = bert({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"],
                      "segment_ids": np.zeros_like(x["token_ids"])})["sequence_output"]
    got = HubBertTower(bert)({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]})
    np.testing.assert_allclose(to_np(got), to_np(reference), atol=1e-6)
    # Kept patches carry the positions of where they were, not of where they end up.
    embedded = to_np(tower.embed_patches(x["images"]))
    conv = to_np(vit.get_layer("vit_patching_and_embedding").patch_embedding(x["images"]))
    table = to_np(vit.get_layer("vit_patching_and_embedding").position_embedding.embeddings)
    np.testing.assert_allclose(embedded, conv.reshape(4, 16, 16) + table[1:], atol=1e-6)
    kept = embedded[:, [3, 9, 14]]
    assert tower.encode_tokens(kept).shape == (4, 4, 16)  # class token + 3 kept


def test_hub_clip_trains_with_fit_saves_and_reloads_identically(tmp_path):
    model = CLIP(hub_backbone(*hub_pair()))
    counts = collections.Counter(v.path for v in model.variables)
    assert [p for p, n in counts.items() if n > 1] == []
    if keras.config.backend() == "torch":
        parameters = {id(p) for p in model.parameters()}
        assert all(id(v.value) in parameters for v in model.variables)
    before = [to_np(v).copy() for v in model.backbone.trainable_variables]
    history = model.fit(batch(), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    unmoved = [v.path for b, v in zip(before, model.backbone.trainable_variables)
               if np.allclose(b, to_np(v))]
    # Every tower weight trains, except attention key biases, which no loss
    # reaches (softmax is shift-invariant); BERT's unused pooler is frozen.
    assert all(p.endswith("key/bias") for p in unmoved), unmoved
    assert not any(v.path.startswith("pooled_dense") for v in model.trainable_variables)
    model.save_to_preset(str(tmp_path))
    restored = CLIP.from_preset(str(tmp_path))
    assert isinstance(restored.backbone.image_encoder, HubViTTower)
    assert isinstance(restored.backbone.text_encoder.backbone, keras_hub.models.BertBackbone)
    x = batch(seed=1)
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_allclose(to_np(restored(x)[key]), to_np(model(x)[key]), atol=1e-6)
    # The evaluations and the FLOP count read the same tower attributes.
    from keras_maeclip.evaluation.linear_probe import image_features
    from keras_maeclip.training.flops import flop_count

    assert image_features(restored, np.zeros((3, 16, 16, 3), "uint8")).shape == (3, 16)
    assert flop_count(restored, batch_size=4).train > 0


def test_hub_maeclip_trains_and_changes_resolution():
    vit, bert = hub_pair()
    decoder = CrossModalDecoder(num_patches=16, patch_size=4, hidden_dim=16, num_layers=1,
                                num_heads=2, vocabulary_size=50, sequence_length=8)
    model = MAECLIP(hub_backbone(vit, bert), decoder, seed=0)
    history = model.fit(batch(), epochs=1, verbose=0)
    assert np.isfinite(history.history["image_reconstruction_loss"][0])
    bigger = with_image_size(model, 24)
    embedding = bigger.backbone.image_encoder.backbone.get_layer("vit_patching_and_embedding")
    old = to_np(vit.get_layer("vit_patching_and_embedding").position_embedding.embeddings)
    np.testing.assert_allclose(to_np(embedding.position_embedding.embeddings),
                               resample_positions(old, 6, num_prefix_tokens=1), atol=1e-6)
    assert bigger.decoder.num_patches == 36
    x = batch()
    x["images"] = np.zeros((4, 24, 24, 3), "float32")
    assert bigger(x)["pixels"].shape == (4, 36, 48)
