"""ToCo loss-weight schedule: A.10 items 14-15 (faithful) and the Q10 correction."""

import pytest

from wsss.errors import ConfigError
from wsss.refiners.toco import ToCoRefiner
from wsss.refiners.toco.schedule import default_starts, loss_weights


def _voc(step, faithful):
    return loss_weights(step, *default_starts("voc"), faithful=faithful)


def _coco(step, faithful):
    return loss_weights(step, *default_starts("coco"), faithful=faithful)


@pytest.mark.parametrize("faithful, last_off", [(True, 2000), (False, 1999)])
def test_voc_seg_warmup(faithful, last_off):
    for step in (0, 1, last_off):
        w = _voc(step, faithful)
        assert (w.ptc, w.ctc, w.seg, w.seg_cam) == (0.2, 0.5, 0.0, "final")
    w = _voc(last_off + 1, faithful)
    assert (w.ptc, w.ctc, w.seg) == (0.2, 0.5, 0.1)
    assert _voc(19999, faithful).seg == 0.1


@pytest.mark.parametrize("faithful", [True, False])
def test_coco_phases(faithful):
    late = 1 if faithful else 0
    for step in (0, 7999 + late):
        w = _coco(step, faithful)
        assert (w.ptc, w.ctc, w.seg) == (0.0, 0.0, 0.0)
    for step in (8000 + late, 11999 + late):
        w = _coco(step, faithful)
        assert (w.ptc, w.ctc, w.seg, w.seg_cam) == (0.0, 0.0, 0.1, "aux")
    for step in (12000 + late, 79999):
        w = _coco(step, faithful)
        assert (w.ptc, w.ctc, w.seg, w.seg_cam) == (0.2, 0.5, 0.1, "final")


def test_coco_faithful_boundaries_exactly():
    assert _coco(8000, True).seg == 0.0 and _coco(8001, True).seg == 0.1
    assert _coco(12000, True).ptc == 0.0 and _coco(12000, True).seg_cam == "aux"
    assert _coco(12001, True).ptc == 0.2 and _coco(12001, True).seg_cam == "final"


def test_refiner_uses_dataset_defaults_and_overrides():
    voc = ToCoRefiner("voc")
    assert (voc.high, voc.low, voc.bkg_thre, voc.temperature) == (0.70, 0.25, 0.50, 0.5)
    assert voc.weights_at(1999).seg == 0.0 and voc.weights_at(2000).seg == 0.1
    assert ToCoRefiner("voc", faithful=True).weights_at(2000).seg == 0.0
    coco = ToCoRefiner("coco", faithful=True)
    assert (coco.high, coco.low, coco.bkg_thre, coco.temperature) == (0.65, 0.25, 0.45, 1.0)
    assert ToCoRefiner("coco").temperature == 0.5  # Q5 corrected: the configured value is used
    assert ToCoRefiner("coco", contrast_start=-1).weights_at(0).ptc == 0.2
    assert ToCoRefiner("voc", seg_warmup=5).weights_at(5).seg == 0.1
    assert coco.stages == [("classification", 0), ("segmentation_aux_labels", 8001), ("full", 12001)]
    assert voc.stage_at(2500) == "full" and voc.stage_at(10) == "contrast"


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="dataset"):
        ToCoRefiner("cityscapes")
