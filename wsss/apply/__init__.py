"""Apply what was trained to new, unlabelled images.

* :mod:`wsss.apply.predict`: the trained segmenter with its configured inference (``wsss predict``).
* :mod:`wsss.apply.explain`: CAMs of a classifier with faithfulness metrics (``wsss explain``), for a
  wsss classifier checkpoint or a timm model given by name and a local weight file
  (:mod:`wsss.apply.explain_model`).
* :mod:`wsss.apply.images`: the image files a folder, glob or file names, read and converted to RGB.

``wsss.predict`` and ``wsss.explain`` are the notebook entry points.
"""
