"""Cumulative classifier-free guidance of FPDM and the branch layout of its batched call.

Plain FPDM: three branches [uncond; src; full] in one batched UNet call (FPDM Eq. 12).
With multi-focal conditioning (MCLD) a fourth branch adds the focal tokens of the source's
face and hands between ``src`` and ``full``: [uncond; src; focal; full], still one call.
The guided prediction is linear in the branches (:func:`branch_coefficients`), and a branch
whose weight is 0 is not run at all (:func:`needed_branches`): no guidance (1, 1) costs one
UNet pass per step, the paper's (2, 2) two.
"""

from __future__ import annotations

import torch

# Order of the three branches in the batched UNet call: (drop_pose, drop_source, drop_fusion).
BRANCHES: tuple[tuple[str, tuple[bool, bool, bool]], ...] = (
    ("uncond", (True, True, True)),  # no pose, no source, no F
    ("src", (False, False, True)),  # pose + source, no F
    ("full", (False, False, False)),  # pose + source + F
)

# MCLD: (drop_pose, drop_source, drop_fusion, drop_focal) per branch.
FOCAL_BRANCHES: tuple[tuple[str, tuple[bool, bool, bool, bool]], ...] = (
    ("uncond", (True, True, True, True)),  # nothing
    ("src", (False, False, True, True)),  # pose + source
    ("focal", (False, False, True, False)),  # pose + source + focal tokens
    ("full", (False, False, False, False)),  # pose + source + focal tokens + F
)


def cumulative_guidance(
    eps_u: torch.Tensor,
    eps_src: torch.Tensor,
    eps_full: torch.Tensor,
    w_src: float,
    w_fuse: float,
) -> torch.Tensor:
    """Cumulative classifier-free guidance: FPDM Eq. 12 ("Fusion Embedding for Pose-Guided
    Person Image Synthesis with Diffusion Model"; builds on Ho & Salimans 2021).

    Works on any prediction type (epsilon or v) since it is linear in the predictions.
    With w_src = w_fuse = 1 it returns ``eps_full``.
    """
    return eps_u + w_src * (eps_src - eps_u) + w_fuse * (eps_full - eps_src)


def focal_cumulative_guidance(
    eps_u: torch.Tensor,
    eps_src: torch.Tensor,
    eps_focal: torch.Tensor,
    eps_full: torch.Tensor,
    w_src: float,
    w_focal: float,
    w_fuse: float,
) -> torch.Tensor:
    """FPDM's cumulative guidance (Eq. 12) with one more cumulative term for the MCLD focal
    tokens, each term guiding from the previous branch to the next:

        eps = eps_u + w_src (eps_src - eps_u) + w_focal (eps_focal - eps_src)
                    + w_fuse (eps_full - eps_focal)

    All weights 1 gives ``eps_full``; w_focal = w_fuse reduces to FPDM's formula applied
    with ``eps_full``; linear in the predictions, so any prediction type works.
    """
    return (
        eps_u
        + w_src * (eps_src - eps_u)
        + w_focal * (eps_focal - eps_src)
        + w_fuse * (eps_full - eps_focal)
    )


def branch_coefficients(
    w_src: float, w_fuse: float, w_focal: float | None = None
) -> tuple[float, ...]:
    """The guided prediction as a weighted sum of the branch predictions, weights in branch
    order. FPDM Eq. 12 expands to (1 - w_src) eps_u + (w_src - w_fuse) eps_src + w_fuse
    eps_full; with focal tokens (w_focal given) eps_src's weight is w_src - w_focal and
    eps_focal's w_focal - w_fuse. The weights sum to 1."""
    if w_focal is None:
        return (1.0 - w_src, w_src - w_fuse, w_fuse)
    return (1.0 - w_src, w_src - w_focal, w_focal - w_fuse, w_fuse)


def needed_branches(w_src: float, w_fuse: float, w_focal: float | None = None) -> tuple[int, ...]:
    """Indices (branch order) of the branches with a non-zero weight: the only ones a
    sampler has to run. No guidance (1, 1) needs ``full`` alone (one UNet pass per step
    instead of three), the paper's (2, 2) ``uncond`` and ``full``."""
    return tuple(i for i, c in enumerate(branch_coefficients(w_src, w_fuse, w_focal)) if c != 0)


def branch_drop_masks(
    batch: int,
    device: torch.device | str = "cpu",
    *,
    focal: bool = False,
    branches: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Drop masks for the batched guidance call, as keyword args of the denoiser:
    (3B,) each for [uncond; src; full], or with ``focal`` (4B,) each (plus ``drop_focal``)
    for [uncond; src; focal; full]; ``branches`` (indices, e.g. :func:`needed_branches`)
    keeps only those, in that order: (len(branches) B,) each."""
    table = FOCAL_BRANCHES if focal else BRANCHES
    rows = range(len(table)) if branches is None else branches
    masks = torch.tensor([table[i][1] for i in rows], dtype=torch.bool)  # (n, 3|4)
    masks = masks.repeat_interleave(batch, dim=0).to(device)  # (nB, 3|4)
    out = {
        "drop_pose": masks[:, 0],
        "drop_source": masks[:, 1],
        "drop_fusion": masks[:, 2],
    }
    if focal:
        out["drop_focal"] = masks[:, 3]
    return out


def combine_branches(
    pred: torch.Tensor,
    w_src: float,
    w_fuse: float,
    w_focal: float | None = None,
    branches: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Batched branch predictions -> the guided one: FPDM's formula (Eq. 12,
    :func:`cumulative_guidance`) when ``w_focal`` is None, else
    :func:`focal_cumulative_guidance`, written as the weighted sum of the branches with their
    :func:`branch_coefficients`. ``pred`` holds the branches ``branches`` (indices in branch
    order, default: all 3 or 4), B rows each; a branch left out must have weight 0
    (:func:`needed_branches` gives the ones to run)."""
    coef = branch_coefficients(w_src, w_fuse, w_focal)
    if branches is None:
        branches = tuple(range(len(coef)))
    missing = [i for i, c in enumerate(coef) if c != 0 and i not in branches]
    if missing:
        raise ValueError(f"branches {missing} have non-zero guidance weight but were not run")
    parts = pred.chunk(len(branches))
    out = parts[0] * coef[branches[0]]
    for i, part in zip(branches[1:], parts[1:]):
        out = out + part * coef[i]
    return out
