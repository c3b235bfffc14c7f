"""Text side of ExCEL and CLIP-ES: class prompts, background words and Text Semantic Enrichment
(spec C.2, D.1).

A text file (``data/text/<dataset>.json``, written for this project) holds, per class, its name,
synonyms and attribute descriptions, plus the background words::

    {"prompt": "a clean origami {}.", "background": ["ground", ...],
     "classes": [{"name": "aeroplane", "synonyms": ["airplane"], "descriptions": ["...", ...]}, ...]}

The descriptions are encoded once, clustered with seeded K-means into the implicit attribute bank and
cached with a header; the cache is rebuilt whenever the header (text file hash, model id, K, seed)
differs. No language model and no network are used at run time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.errors import ConfigError
from wsss.io import atomic_write_bytes

log = logging.getLogger("wsss")

DEFAULT_PROMPT = "a clean origami {}."
# CLIP-ES's VOC background words (clip_text.py); COCO drops "keyboard" and "sign".
VOC_BACKGROUND = ("ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
                  "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock",
                  "street", "valley", "bridge", "sign")
TEXT_DIR = Path(__file__).resolve().parents[3] / "data" / "text"

Encoder = Callable[[Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class ClassTexts:
    """Everything the text side needs: the prompt, per-class names (first = the dataset's name) and
    descriptions, background words, and the file's content hash (``""`` for the fallback)."""

    prompt: str
    names: list[list[str]]
    descriptions: list[list[str]]
    background: list[str]
    digest: str

    def class_prompts(self) -> list[str]:
        """One prompt per class; synonyms joined by commas inside it (CLIP-ES's convention)."""
        return [self.prompt.format(",".join(n)) for n in self.names]

    def background_prompts(self) -> list[str]:
        return [self.prompt.format(b) for b in self.background]

    def description_prompts(self) -> list[str]:
        """Every description prefixed with its class prompt (ExCEL's knowledge base layout)."""
        return [f"{self.prompt.format(n[0])} {d}" for n, ds in zip(self.names, self.descriptions) for d in ds]


def default_text_file(dataset: str) -> Path:
    return TEXT_DIR / f"{dataset}.json"


def load_class_texts(path: str | Path | None, class_names: Sequence[str]) -> ClassTexts:
    """The texts of ``class_names`` (foreground, without background) from ``path``; a missing file falls
    back to the bare names (no synonyms, no descriptions: no enrichment) with a warning."""
    path = Path(path) if path else None
    if path is None or not path.is_file():
        warnings.warn(f"CLIP text file {path} not found: using the bare class names (no synonyms, no "
                      "attribute descriptions, CLIP-ES background words); write one like data/text/voc.json",
                      stacklevel=2)
        return ClassTexts(DEFAULT_PROMPT, [[n] for n in class_names], [[] for _ in class_names],
                          list(VOC_BACKGROUND), "")
    raw = path.read_bytes()
    data = json.loads(raw)
    by_name = {c["name"]: c for c in data["classes"]}
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise ConfigError(f"{path}: no entry for classes {missing} (it has {sorted(by_name)})")
    entries = [by_name[n] for n in class_names]
    return ClassTexts(data.get("prompt", DEFAULT_PROMPT), [[e["name"], *e.get("synonyms", [])] for e in entries],
                      [list(e.get("descriptions", [])) for e in entries], list(data.get("background", VOC_BACKGROUND)),
                      hashlib.sha256(raw).hexdigest()[:16])


def attribute_bank(descriptions: torch.Tensor, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """K-means centres of L2-normalised description embeddings [M, E]: the bank ``A`` [E, n_clusters]."""
    from sklearn.cluster import KMeans

    if descriptions.shape[0] < n_clusters:
        raise ConfigError(f"clip.n_clusters={n_clusters} exceeds the {descriptions.shape[0]} descriptions")
    x = F.normalize(descriptions.double(), dim=-1).cpu().numpy()
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit(x)
    return torch.from_numpy(np.asarray(km.cluster_centers_, np.float32)).t().contiguous()


def enrich_text(class_text: torch.Tensor, bank: torch.Tensor, background: torch.Tensor,
                keep: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribute hunting (spec C.2 step 5): ``s = t A``; the ``int((1 - keep) * N_a)`` lowest logits per
    class get weight 0; ``w = softmax(s)``; ``T = normalize(w A^T + t)``; background rows appended.

    class_text: [K, E] (unit rows); bank: [E, N_a]; background: [N_b, E] (unit rows, appended as they are) ->
    (texts [K + N_b, E] unit rows, weights [K, N_a] rows summing to 1)."""
    scores = class_text @ bank
    drop = int((1 - keep) * bank.shape[1])
    if drop:
        lowest = scores.topk(drop, dim=-1, largest=False).indices
        scores = scores.scatter(-1, lowest, float("-inf"))
    weights = scores.softmax(dim=-1)
    enriched = F.normalize(weights @ bank.t() + class_text, dim=-1)
    return torch.cat([enriched, background]), weights


def cache_header(texts: ClassTexts, model: str, n_clusters: int, seed: int) -> dict[str, object]:
    return {"text_digest": texts.digest, "model_id": model, "n_clusters": n_clusters, "seed": seed}


def text_embeddings(texts: ClassTexts, encode: Encoder, model: str, n_clusters: int, seed: int,
                    cache: str | Path | None) -> dict[str, torch.Tensor]:
    """``{"classes": [K, E], "background": [N_b, E], "bank": [E, N_a] or [E, 0]}`` (unit rows), read
    from ``cache`` when its header matches, else encoded (and clustered) and written there."""
    header = cache_header(texts, model, n_clusters, seed)
    path = Path(cache) if cache else None
    if path is not None and path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("header") == header:
            return stored["embeddings"]
        log.info("%s: text cache made for %s, rebuilding for %s", path, stored.get("header"), header)
    with torch.no_grad():
        embeddings = {"classes": F.normalize(encode(texts.class_prompts()), dim=-1),
                      "background": F.normalize(encode(texts.background_prompts()), dim=-1)}
        described = texts.description_prompts()
        dim = embeddings["classes"].shape[1]
        embeddings["bank"] = (attribute_bank(encode(described), n_clusters, seed) if described and n_clusters
                              else torch.zeros(dim, 0))
    if path is not None:
        buffer = io.BytesIO()
        torch.save({"header": header, "embeddings": embeddings}, buffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    return embeddings
