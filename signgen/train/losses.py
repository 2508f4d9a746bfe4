"""Training losses and retrieval metrics of FPDM stage 1 (Image-Pose Fusion, IPF).

Small pure functions; each cites the FPDM paper ("Fusion Embedding for Pose-Guided Person
Image Synthesis with Diffusion Model") by equation; docs/training.md summarises them. Embeddings are expected L2-normalised (cosine similarity = dot product); the
functions normalise again, which is a no-op for unit vectors and makes them safe on raw
features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce_baseline(
    target: torch.Tensor, fusion: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Batch InfoNCE between target embeddings (rows) and fusion embeddings (columns).

    FPDM Eq. 3 (after Baldrati et al. 2023; Oord et al. 2018): logits_ij = cos(T_i, F_j)/tau,
    a B x B matrix whose diagonal holds the positives; mean cross-entropy over rows.
    target, fusion: (B, D). Returns a scalar.
    """
    assert target.shape == fusion.shape and target.ndim == 2, (target.shape, fusion.shape)
    t = F.normalize(target, dim=-1)
    f = F.normalize(fusion, dim=-1)
    logits = t @ f.T / temperature  # (B, B)
    labels = torch.arange(t.shape[0], device=t.device)
    return F.cross_entropy(logits, labels)


def info_nce_source_enhanced(
    target: torch.Tensor, fusion: torch.Tensor, source: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Source-enhanced InfoNCE: rows [T; S], columns [F; S], 2B x 2B, diagonal positives.

    FPDM Eq. 4-6 (the paper's best IPF, "A3"/"B6"; docs/training.md): adding the source
    embeddings to the batch doubles it, so each target must match its fusion embedding
    rather than any source image of the same person, which separates the embedding space
    by pose. target, fusion, source: (B, D). Returns a scalar.
    """
    assert target.shape == fusion.shape == source.shape and target.ndim == 2
    rows = F.normalize(torch.cat([target, source], dim=0), dim=-1)  # (2B, D)
    cols = F.normalize(torch.cat([fusion, source], dim=0), dim=-1)  # (2B, D)
    logits = rows @ cols.T / temperature  # (2B, 2B)
    labels = torch.arange(rows.shape[0], device=rows.device)
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def retrieval_metrics(
    query: torch.Tensor, candidates: torch.Tensor, ks: tuple[int, ...] = (1, 3, 5)
) -> dict[str, float]:
    """Recall@k and average rank of the true candidate (FPDM Table 2).

    query, candidates: (N, D); the true target of query i is candidate i. Candidates are
    ranked by cosine similarity; rank is 1-based and counts candidates scoring strictly
    higher than the true one (ties resolved in the query's favour).
    Returns {"R@1", "R@3", "R@5", "avg_rank"}.
    """
    assert query.shape == candidates.shape and query.ndim == 2, (query.shape, candidates.shape)
    q = F.normalize(query.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    sim = q @ c.T  # (N, N)
    true = sim.diagonal().unsqueeze(1)  # (N, 1)
    rank = (sim > true).sum(dim=1) + 1  # (N,)
    out = {f"R@{k}": float((rank <= k).float().mean()) for k in ks}
    out["avg_rank"] = float(rank.float().mean())
    return out
