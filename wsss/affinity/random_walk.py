"""IRN's random walk (Ahn et al., CVPR 2019; official code jiwoon-ahn/irn ``misc/indexing.py``
``propagate_to_edge``): CAMs propagated over a transition matrix made from predicted class
boundaries.

The affinity of two pixels within ``radius`` is ``1 - max`` boundary along their path (every other
pair: 0; a pixel with itself: 1), raised to the power ``beta``; the transition matrix normalises it
per column, and ``2 ** exp_times`` steps of the walk are applied to the CAMs, first multiplied by
``1 - boundary``. The official code squares a dense N x N matrix ``exp_times`` times; here the sparse
matrix is applied ``2 ** exp_times`` times to the maps (the same product, a fraction of the memory
and time: N is the number of pixels of the stride-4 grid).
"""

from __future__ import annotations

import warnings

import torch

from wsss.affinity.paths import pair_directions, path_offsets


def sparse_affinity(boundary: torch.Tensor, radius: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs ``(rows, cols, affinity)`` of a boundary map [h, w] (in [0, 1]): every pair of pixels within
    ``radius`` in both orders and every pixel with itself (affinity 1), as flat pixel indices."""
    h, w = boundary.shape
    index = torch.arange(h * w, device=boundary.device).view(h, w)
    rows, cols, values = [index.flatten()], [index.flatten()], [torch.ones(h * w, dtype=boundary.dtype,
                                                                            device=boundary.device)]
    for dy, dx in pair_directions(radius):
        x0, x1 = max(0, -dx), w - max(0, dx)
        if dy >= h or x0 >= x1:
            continue
        src = index[: h - dy, x0:x1]
        path = torch.stack([boundary[y : y + h - dy, x0 + x : x1 + x] for y, x in path_offsets((dy, dx))])
        aff = 1 - path.amax(dim=0)
        dst = index[dy:, x0 + dx : x1 + dx]
        rows += [src.flatten(), dst.flatten()]
        cols += [dst.flatten(), src.flatten()]
        values += [aff.flatten(), aff.flatten()]
    return torch.cat(rows), torch.cat(cols), torch.cat(values)


def transition_matrix(boundary: torch.Tensor, radius: int = 5, beta: float = 10.0) -> torch.Tensor:
    """Sparse [N, N] (N = h * w) matrix ``T`` with ``T[i, j] = a_ij ** beta / sum_i a_ij ** beta``."""
    rows, cols, values = sparse_affinity(boundary, radius)
    values = values.pow(beta)
    n = boundary.numel()
    col_sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, cols, values)
    keep = values > 0
    return torch.sparse_coo_tensor(torch.stack([rows[keep], cols[keep]]), (values / col_sums[cols])[keep],
                                   (n, n), check_invariants=True).coalesce()


def random_walk(cams: torch.Tensor, boundary: torch.Tensor, radius: int = 5, beta: float = 10.0,
                exp_times: int = 8) -> torch.Tensor:
    """IRN's propagation of ``cams`` [K, h, w] over ``boundary`` [h, w]: ``(cams * (1 - boundary)) @ T ** (2 **
    exp_times)``, [K, h, w] (computed in float64, returned in the dtype of ``cams``)."""
    k, h, w = cams.shape
    boundary = boundary.to(torch.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        transposed = transition_matrix(boundary, radius, beta).t().to_sparse_csr()  # CSR: a fast product
    x = (cams.to(torch.float64) * (1 - boundary)).reshape(k, h * w).t().contiguous()
    for _ in range(2 ** exp_times):
        x = transposed @ x
    return x.t().reshape(k, h, w).to(cams.dtype)
