"""wsss: weakly supervised semantic segmentation, from image-level labels to a trained segmenter.

``wsss.predict`` and ``wsss.explain`` apply trained models to new images from a notebook; both import
the heavy modules only when called, so ``import wsss`` stays light.
"""

__version__ = "0.1.0"


def predict(images, ckpt, **options):
    """Segmentation masks of new images: ``{id: uint8 [H, W]}``; see :func:`wsss.apply.predict.predict_images`."""
    from wsss.apply.predict import predict_images

    return predict_images(images, ckpt, **options)


def explain(images, model, methods=("cam", "gradcam", "gradcampp", "layercam"), **options):
    """CAMs and their faithfulness on new images; see :func:`wsss.apply.explain.explain_images`."""
    from wsss.apply.explain import explain_images

    return explain_images(images, model, methods, **options)
