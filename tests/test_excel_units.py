"""ExCEL / CLIP-ES maths (spec C.11 and D): text enrichment and its cache, SVC, the patch-text CAM with
the redundancy subtraction, the attention affinity and box masks, CLIP-ES Grad-CAM."""

import json
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from wsss.refiners.excel.affinity import affinity_refine, box_mask, transition_matrix
from wsss.refiners.excel.clip_model import build_open_clip, calibrated_block, dense_forward, embed_patches
from wsss.refiners.excel.methods import ClipCamModel, raw_clip_es, raw_excel
from wsss.refiners.excel.surgery import (
    calibrated_attention,
    surgery_cam,
    surgery_scores,
    surgery_scores_elementwise,
)
from wsss.refiners.excel.text import (
    ClassTexts,
    attribute_bank,
    enrich_text,
    load_class_texts,
    text_embeddings,
)

os.environ["HF_HUB_OFFLINE"] = "1"

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 6, "width": 96, "head_width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1}}


@pytest.fixture(scope="module")
def clip():
    return build_open_clip("ViT-B-16-quickgelu", None, TINY, seed=0)


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_attribute_bank_shape_and_seeded():
    d = unit(140, 512)
    a = attribute_bank(d, 112, seed=0)
    assert a.shape == (512, 112)
    assert torch.equal(a, attribute_bank(d, 112, seed=0))


@pytest.mark.parametrize("n_a, dropped", [(112, 11), (224, 22)])
def test_enrich_text_drops_the_lowest_attributes(n_a, dropped):
    t, bank, bg = unit(5, 64, seed=1), unit(64, n_a, seed=2), unit(3, 64, seed=3)
    texts, w = enrich_text(t, bank, bg, keep=0.9)
    assert ((w == 0).sum(dim=1) == dropped).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5))
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(8))
    assert torch.equal(texts[5:], bg)
    lowest = (t @ bank).argsort(dim=1)[:, :dropped]
    assert (w.gather(1, lowest) == 0).all()


def test_calibrated_attention_rows_sum_to_one_per_head_and_to_heads_after_the_sum():
    q, k, v = (torch.randn(2, 12, 10, 8, generator=torch.Generator().manual_seed(s)) for s in range(3))
    a = calibrated_attention(q, k, v)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 12, 10))
    torch.testing.assert_close(a.sum(1).sum(-1), torch.full((2, 10), 12.0))


def test_svc_block_matches_a_hand_computation(clip):
    block = clip.visual.transformer.resblocks[-1]
    x = torch.randn(2, 17, 96, generator=torch.Generator().manual_seed(0))
    y = F.layer_norm(x, (96,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    heads, d = 12, 8
    out = torch.zeros(2, 17, 96)
    attn_sum = torch.zeros(2, 17, 17)
    parts = [(y @ w[i * 96:(i + 1) * 96].t() + b[i * 96:(i + 1) * 96]) for i in range(3)]
    for h in range(heads):
        q, k, v = (p[..., h * d:(h + 1) * d] for p in parts)
        attn_sum += sum(torch.softmax(m @ m.transpose(1, 2) / d ** 0.5, dim=-1) for m in (q, k, v)) / 3
    for h in range(heads):
        out[..., h * d:(h + 1) * d] = attn_sum @ parts[2][..., h * d:(h + 1) * d]
    expected = out @ block.attn.out_proj.weight.t() + block.attn.out_proj.bias
    torch.testing.assert_close(calibrated_block(block, x), expected, atol=1e-5, rtol=1e-5)


def test_svc_leaves_the_original_path_bit_identical(clip):
    images = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = dense_forward(clip.visual, images, svc_layers=0)
        svc = dense_forward(clip.visual, images, svc_layers=5, head_sum_in_calibrated=False)
        reference = clip.encode_image(F.interpolate(images, size=(32, 32)))
        ours = dense_forward(clip.visual, F.interpolate(images, size=(32, 32))).tokens[:, 0]
    assert torch.equal(plain.tokens[:, 0], svc.tokens[:, 0])
    assert all(torch.equal(a, b) for a, b in zip(plain.attentions, svc.attentions))
    assert not torch.allclose(plain.tokens[:, 1:], svc.tokens[:, 1:])
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    assert plain.grid == (5, 6) and embed_patches(clip.visual, images)[0].shape == (2, 31, 96)


def test_redundancy_subtraction_closed_form_equals_elementwise_and_sums_to_zero():
    tokens, text = unit(2, 9, 16, seed=4), unit(7, 16, seed=5)
    weights = torch.rand(2, 7, generator=torch.Generator().manual_seed(6)) + 0.5
    for w in (None, weights):
        s = surgery_scores(tokens, text, w)
        torch.testing.assert_close(s, surgery_scores_elementwise(tokens, text, w), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(s.sum(dim=-1), torch.zeros(2, 9), atol=1e-6, rtol=0)


def test_surgery_cam_range_and_identical_texts_give_zero_without_nan():
    tokens, text = unit(2, 1 + 12, 16, seed=7), unit(6, 16, seed=8)
    cam = surgery_cam(tokens, text, num_fg=4)
    assert cam.shape == (2, 12, 4) and cam.min() >= 0 and cam.max() <= 1
    same = text[:1].expand(6, -1)
    torch.testing.assert_close(surgery_scores(tokens, same), torch.zeros(2, 13, 6), atol=1e-6, rtol=0)
    flat = surgery_cam(tokens, same, num_fg=4)
    assert torch.isfinite(flat).all() and flat.max() < 1e-2


def test_transition_matrix_symmetric_and_identity_stays_identity():
    t = transition_matrix(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.01)
    torch.testing.assert_close(t, t.transpose(1, 2))
    torch.testing.assert_close(transition_matrix(torch.eye(16)), torch.eye(16))


def test_box_mask_covers_a_single_peak_and_a_zero_cam_refines_to_zero():
    cam = torch.zeros(8, 8)
    cam[2:4, 5:7] = torch.tensor([[0.2, 0.9], [0.95, 1.0]])
    mask = box_mask(cam, 0.4)
    assert mask[3, 6] == 1 and mask.sum() == 4 and mask[0, 0] == 0
    refined = affinity_refine(torch.zeros(2, 8, 8), transition_matrix(torch.rand(64, 64) + 0.1), 0.4)
    assert (refined == 0).all()


def counting_encoder(calls):
    def encode(texts):
        calls.append(len(texts))
        return torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(hash(t) % 2**31)) for t in texts])

    return encode


def write_text(path, extra=""):
    classes = [{"name": n, "synonyms": [n + "s"], "descriptions": [f"{n} detail {i}{extra}." for i in range(10)]}
               for n in ("cat", "dog")]
    path.write_text(json.dumps({"prompt": "a photo of a {}.", "background": ["sky", "road"], "classes": classes}))


def test_text_cache_reused_when_unchanged_and_rebuilt_when_the_file_or_header_changes(tmp_path):
    path, cache = tmp_path / "t.json", tmp_path / "cache.pt"
    write_text(path)
    calls = []
    texts = load_class_texts(path, ["cat", "dog"])
    first = text_embeddings(texts, counting_encoder(calls), "m", 4, 0, cache)
    assert first["bank"].shape == (16, 4) and first["classes"].shape == (2, 16) and len(calls) == 3
    again = text_embeddings(load_class_texts(path, ["cat", "dog"]), counting_encoder(calls), "m", 4, 0, cache)
    assert len(calls) == 3 and torch.equal(again["bank"], first["bank"])
    text_embeddings(texts, counting_encoder(calls), "m", 5, 0, cache)
    assert len(calls) == 6
    write_text(path, extra=" changed")
    changed = text_embeddings(load_class_texts(path, ["cat", "dog"]), counting_encoder(calls), "m", 5, 0, cache)
    assert len(calls) == 9 and not torch.equal(changed["bank"][:, :1], first["bank"][:, :1])
    assert torch.load(cache, weights_only=True)["header"]["text_digest"] == load_class_texts(path, ["cat"]).digest


def test_missing_text_file_falls_back_to_class_names_with_a_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts = load_class_texts(tmp_path / "none.json", ["cat", "dog"])
    assert any("not found" in str(w.message) for w in caught)
    assert texts.class_prompts() == ["a clean origami cat.", "a clean origami dog."]
    assert texts.description_prompts() == []


def test_shipped_text_files_have_ten_descriptions_per_class():
    from wsss.data.synthetic import CLASSES
    from wsss.data.voc import VOC_CLASSES
    from wsss.refiners.excel.text import TEXT_DIR

    for name, classes in (("voc", VOC_CLASSES[1:]), ("synthetic", CLASSES[1:])):
        texts = load_class_texts(TEXT_DIR / f"{name}.json", classes)
        assert all(len(d) >= 10 for d in texts.descriptions)
    coco = json.loads((TEXT_DIR / "coco.json").read_text())
    assert len(coco["classes"]) == 80 and all(len(c["descriptions"]) >= 10 for c in coco["classes"])


def model_for(clip, **options):
    emb = {"classes": unit(3, 32, seed=9), "background": unit(4, 32, seed=10), "bank": unit(32, 6, seed=11)}
    base = {"keep": 0.9, "svc_layers": 5, "class_prior": True, "feature_norm": "token", "head_sum_in_calibrated": True,
            "affinity_layers": 6, "box_threshold": 0.4, "affinity": True, "par_iter": 2}
    return ClipCamModel(clip, emb, {**base, **options}).eval()


@pytest.mark.parametrize("raw", [raw_excel, raw_clip_es])
def test_clip_methods_give_maps_of_the_requested_slots(clip, raw):
    images = torch.randn(2, 3, 36, 44, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 2], [1, -1]])
    maps = raw(model_for(clip), images, targets)
    assert maps.shape == (2, 2, 36, 44) and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-5
    unrefined = raw(model_for(clip, affinity=False, par_iter=0), images, targets)
    assert unrefined.shape == (2, 2, 5, 6)
    torch.testing.assert_close(unrefined.amax(dim=(-2, -1))[0], torch.ones(2), atol=1e-4, rtol=0)
    assert not any(p.requires_grad for p in clip.parameters())


def test_clip_es_padding_slot_is_zero_and_class_maps_differ(clip):
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = raw_clip_es(model_for(clip, affinity=False, par_iter=0), images, torch.tensor([[0, 1, -1]]))
    assert (maps[0, 2] == 0).all() and not torch.allclose(maps[0, 0], maps[0, 1])


def test_classtexts_prompts_join_synonyms():
    t = ClassTexts("a clean origami {}.", [["person", "people", "human"]], [["wears clothes."]], ["sky"], "")
    assert t.class_prompts() == ["a clean origami person,people,human."]
    assert t.description_prompts() == ["a clean origami person. wears clothes."]
