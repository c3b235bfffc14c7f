"""IRN's confident regions of the CAMs (official code jiwoon-ahn/irn ``step/cam_to_ir_label.py``):
the label map the inter-pixel relations are drawn from.

Two label maps are made, each the argmax of the CAMs under a constant background score
(``fg_threshold``, high: confident foreground; ``bg_threshold``, low: confident background) and
refined by IRN's label CRF. A pixel gets its class where the high map has one, background where
both maps say background, and ``ignore`` (255) elsewhere.
"""

from __future__ import annotations

import numpy as np

from wsss.data.palette import IGNORE_INDEX

IRN_CONF_FG = 0.30
IRN_CONF_BG = 0.05


def crf_label_inference(image: np.ndarray, labels: np.ndarray, n_labels: int, n_iter: int = 10,
                        gt_prob: float = 0.7) -> np.ndarray:
    """IRN's CRF on a hard label map (``misc/imutils.py crf_inference_label``): unary from the labels
    with confidence ``gt_prob``, Gaussian kernel sxy 3 / compat 3, bilateral sxy 50 / srgb 5 /
    compat 10. ``image`` uint8 [H, W, 3], ``labels`` int [H, W] in [0, n_labels) -> int64 [H, W]."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    h, w = labels.shape
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.require(image, np.uint8, ["C", "W"]), compat=10)
    return np.argmax(np.asarray(d.inference(n_iter)).reshape(n_labels, h, w), axis=0)


def confident_labels(image: np.ndarray, cams: np.ndarray, class_ids: np.ndarray, fg_threshold: float = IRN_CONF_FG,
                     bg_threshold: float = IRN_CONF_BG, crf: bool = True) -> np.ndarray:
    """Label map uint8 [H, W] (0 background, class ids, 255 unknown) of ``cams`` [K, H, W] (in [0, 1],
    classes ``class_ids`` [K]) on ``image`` uint8 [H, W, 3]. Ties between a CAM and the threshold go
    to the background (argmax takes the first). An image without positive classes (K = 0) is all
    confident background."""
    lut = np.concatenate([[0], np.asarray(class_ids)]).astype(np.int64)

    def region(threshold: float) -> np.ndarray:
        scores = np.concatenate([np.full((1, *cams.shape[1:]), threshold, np.float32), cams], axis=0)
        pred = np.argmax(scores, axis=0)
        if crf and lut.shape[0] > 1:  # an image with no positive class is background: a 1-label CRF is undefined
            pred = crf_label_inference(image, pred, n_labels=lut.shape[0])
        return lut[pred]

    fg, bg = region(fg_threshold), region(bg_threshold)
    out = np.where(fg == 0, IGNORE_INDEX, fg)
    out[(fg == 0) & (bg == 0)] = 0
    return out.astype(np.uint8)
