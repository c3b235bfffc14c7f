"""ImageNet-1k class names, read from the class index timm ships (``timm/data/_info``; no download).

A name is the first lemma of the class's WordNet synset (``tabby``, ``tiger cat``, ``Egyptian cat``);
the two first lemmas ImageNet uses twice (``crane``: the bird and the machine; ``maillot``) carry the
synset id, e.g. ``crane (n02012849)``, so every name is unique.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 names in logit order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    first = [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
    counts = Counter(first)
    return tuple(name if counts[name] == 1 else f"{name} ({info.index_to_label_name(i)})"
                 for i, name in enumerate(first))
