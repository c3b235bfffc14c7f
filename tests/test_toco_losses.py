"""ToCo PTC / CTC / segmentation losses: known answers of spec A.10 items 1-11 in both modes."""

import math

import pytest
import torch

from wsss.refiners.toco import ctc_loss, ptc_loss
from wsss.refiners.toco.losses import balanced_seg_loss

E1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
E2 = torch.tensor([0.0, 1.0], dtype=torch.float64)


def _ptc(feats, labels, faithful):
    return ptc_loss(torch.stack(feats)[None], torch.tensor([labels]), faithful=faithful).item()


# (features, labels, faithful answer, corrected answer): spec A.10 items 1-5.
PTC_CASES = {
    "1_identical_one_class": ([E1] * 4, [1, 1, 1, 1], 0.5 / 13, 0.0),
    "2_collapsed": ([E1] * 4, [0, 0, 1, 1], 0.5 / 5 + 0.5 * 8 / 9, 0.5),
    "3_orthogonal": ([E1, E1, E2, E2], [0, 0, 1, 1], 0.1, 0.0),
    "4_anti_aligned": ([E1, E1, -E1, -E1], [0, 0, 1, 1], 0.5 / 5 + 0.5 * 8 / 9, 0.0),
    "5_all_ignored": ([E1] * 4, [255] * 4, 0.5, 0.0),
}


@pytest.mark.parametrize("case", sorted(PTC_CASES))
@pytest.mark.parametrize("faithful", [True, False])
def test_ptc_known_answers(case, faithful):
    feats, labels, want_faithful, want_corrected = PTC_CASES[case]
    want = want_faithful if faithful else want_corrected
    assert _ptc(feats, labels, faithful) == pytest.approx(want, abs=1e-7)


def test_ptc_known_values_match_spec_decimals():
    assert _ptc([E1] * 4, [1] * 4, True) == pytest.approx(0.0384615, abs=1e-7)
    assert _ptc([E1] * 4, [0, 0, 1, 1], True) == pytest.approx(0.5444444, abs=1e-7)


@pytest.mark.parametrize("faithful", [True, False])
def test_ptc_all_ignored_has_zero_gradient(faithful):
    feats = torch.randn(2, 4, 3, requires_grad=True)
    loss = ptc_loss(feats, torch.full((2, 4), 255), faithful=faithful)
    loss.backward()
    assert loss.item() == pytest.approx(0.5 if faithful else 0.0)
    assert torch.count_nonzero(feats.grad) == 0


@pytest.mark.parametrize("faithful", [True, False])
def test_ptc_gradient_only_into_features(faithful):
    torch.manual_seed(0)
    feats = torch.randn(2, 6, 4, requires_grad=True)
    labels = torch.tensor([[0, 0, 1, 1, 255, 2], [3, 3, 0, 0, 0, 255]])
    loss = ptc_loss(feats, labels, faithful=faithful)
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0
    assert not labels.is_floating_point() and not labels.requires_grad
    # an ignored token takes part in no pair, so it gets no gradient
    assert torch.count_nonzero(feats.grad[0, 4]) == 0 and torch.count_nonzero(feats.grad[1, 5]) == 0


def test_ptc_pairs_stay_within_an_image():
    # each image holds one class only; across images the classes differ, so cross-image
    # negatives would change the loss if pairs crossed images
    feats = torch.stack([torch.stack([E1] * 3), torch.stack([E1] * 3)])
    labels = torch.tensor([[1, 1, 1], [2, 2, 2]])
    assert ptc_loss(feats, labels, faithful=True).item() == pytest.approx(0.5 * (1 - 12 / 13), abs=1e-9)
    assert ptc_loss(feats, labels, faithful=False).item() == pytest.approx(0.0, abs=1e-9)


def test_ptc_faithful_pools_counts_corrected_averages_images():
    # image 0: 4 tokens, one class, identical; image 1: 2 tokens, two classes, identical
    feats = torch.stack([torch.stack([E1] * 4), torch.stack([E1, E1, E1, E1])])
    labels = torch.tensor([[1, 1, 1, 1], [1, 2, 255, 255]])
    # faithful: P = 12 + 0, N = 0 + 2 over the batch
    assert ptc_loss(feats, labels, faithful=True).item() == pytest.approx(
        0.5 * (1 - 12 / 13) + 0.5 * 2 / 3, abs=1e-9)
    # corrected: image 0 -> 0, image 1 -> 0.5 * 1 -> mean 0.25
    assert ptc_loss(feats, labels, faithful=False).item() == pytest.approx(0.25, abs=1e-9)


U = torch.tensor([1.0, 0.0], dtype=torch.float64)
V = torch.tensor([0.0, 1.0], dtype=torch.float64)
FLAGS = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.float64)
TEACHER = torch.stack([U, U])[None]


def _students(vectors):
    return torch.stack(vectors)[None]


@pytest.mark.parametrize(
    "students, flags, tau, want",
    [
        ([V] * 10, torch.ones(1, 10), 0.5, 11 * math.log(1.0001) / 10.0001),  # item 7
        ([U] * 10, torch.ones(1, 10), 0.5, 2.35327e-5),  # item 8
        ([U] * 10, FLAGS, 0.5, 2.1793329),  # item 9
        ([U] * 10, FLAGS, 1.0, 2.0217926),
        ([U] * 6 + [-U] * 4, FLAGS, 0.5, 0.1428330),  # item 10
        ([U] * 6 + [-U] * 4, FLAGS, 1.0, 0.5834792),
    ],
)
def test_ctc_faithful_known_answers(students, flags, tau, want):
    got = ctc_loss(TEACHER, _students(students), flags.double(), tau, faithful=True).item()
    assert got == pytest.approx(want, rel=2e-5)


def test_ctc_corrected_known_answers():
    # no negatives: every term is -log(s / s) = 0
    assert ctc_loss(TEACHER, _students([V] * 10), torch.ones(1, 10), 0.5).item() == pytest.approx(0.0, abs=1e-12)
    # negatives equal to the anchor: each pair -log(e^2 / (e^2 + 4 e^2)) = log 5
    got = ctc_loss(TEACHER, _students([U] * 10), FLAGS, 0.5).item()
    assert got == pytest.approx(math.log(5), rel=1e-9)
    # opposite negatives: log(1 + 4 e^-4), cosine/tau with tau 0.5
    got = ctc_loss(TEACHER, _students([U] * 6 + [-U] * 4), FLAGS, 0.5).item()
    assert got == pytest.approx(math.log(1 + 4 * math.exp(-4.0)), rel=1e-9)


def test_ctc_corrected_skips_same_view_and_uses_cosine():
    # scaling a vector changes dot products (faithful) but not cosines (corrected)
    students = _students([U * 3, U, U * 5] + [-U] * 7)
    flags = torch.tensor([[1, 1, 1] + [0] * 7], dtype=torch.float64)
    scaled = students.clone()
    scaled[0, 0] = U * 100  # same-view positive of teacher view 0
    a = ctc_loss(TEACHER, students, flags, 0.5).item()
    b = ctc_loss(TEACHER, scaled, flags, 0.5).item()
    assert a == pytest.approx(b, rel=1e-12)
    assert ctc_loss(TEACHER, students, flags, 0.5, faithful=True).item() != pytest.approx(
        ctc_loss(TEACHER, scaled, flags, 0.5, faithful=True).item())


@pytest.mark.parametrize("faithful", [True, False])
def test_ctc_moving_views_towards_teacher(faithful):
    base = [U] * 2 + [V] * 4 + [V] * 4
    flags = FLAGS

    def loss_with(index, vec):
        vectors = list(base)
        vectors[index] = vec
        return ctc_loss(TEACHER, _students(vectors), flags, 0.5, faithful=faithful).item()

    towards = (U + V) / math.sqrt(2)
    # item 11: a negative moving towards the teacher raises the loss, a positive lowers it
    assert loss_with(7, towards) > loss_with(7, V)
    assert loss_with(3, towards) < loss_with(3, V)


def test_ctc_corrected_finite_gradients_with_and_without_negatives():
    torch.manual_seed(0)
    teacher = torch.randn(2, 2, 4)
    students = torch.randn(2, 5, 4, requires_grad=True)
    loss = ctc_loss(teacher, students, torch.ones(2, 5), 0.5)
    loss.backward()
    # no negatives: every term is exactly 0, and the masked -inf logits must not leak NaN
    assert loss.item() == 0.0 and torch.isfinite(students.grad).all()
    students.grad = None
    flags = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 1, 1.0]])
    ctc_loss(teacher, students, flags, 0.5).backward()
    assert torch.isfinite(students.grad).all() and students.grad.abs().sum() > 0


def test_ctc_rejects_bad_shapes():
    with pytest.raises(ValueError, match="positive_flags"):
        ctc_loss(TEACHER, _students([U] * 10), torch.ones(1, 9), 0.5)


def test_balanced_seg_loss_averages_bg_and_fg_parts():
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, 0] = 10.0  # confident correct background pixel
    labels = torch.tensor([[[0, 1, 1, 255]]])
    per_fg = math.log(3)
    per_bg = -math.log(math.exp(10) / (math.exp(10) + 2))
    assert balanced_seg_loss(logits, labels).item() == pytest.approx(0.5 * (per_bg + per_fg), rel=1e-6)


def test_balanced_seg_loss_empty_part_is_zero_not_nan():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = balanced_seg_loss(logits, torch.zeros(1, 2, 2, dtype=torch.long))
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * math.log(3), rel=1e-6)
    assert torch.isfinite(logits.grad).all()
