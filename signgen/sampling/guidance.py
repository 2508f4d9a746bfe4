"""Cumulative classifier-free guidance of FPDM and the branch layout of its batched call.

Plain FPDM: three branches [uncond; src; full] in one batched UNet call (FPDM Eq. 12).
With multi-focal conditioning (MCLD) a fourth branch adds the focal tokens of the source's
face and hands between ``src`` and ``full``: [uncond; src; focal; full], still one call.
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


def branch_drop_masks(
    batch: int, device: torch.device | str = "cpu", *, focal: bool = False
) -> dict[str, torch.Tensor]:
    """Drop masks for the batched guidance call, as keyword args of the denoiser:
    (3B,) each for [uncond; src; full], or with ``focal`` (4B,) each (plus ``drop_focal``)
    for [uncond; src; focal; full]."""
    branches = FOCAL_BRANCHES if focal else BRANCHES
    masks = torch.tensor([flags for _, flags in branches], dtype=torch.bool)  # (n, 3|4)
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
    pred: torch.Tensor, w_src: float, w_fuse: float, w_focal: float | None = None
) -> torch.Tensor:
    """Batched branch predictions -> the guided one: (3B, ...) with FPDM's formula when
    ``w_focal`` is None, else (4B, ...) with :func:`focal_cumulative_guidance`."""
    if w_focal is None:
        eps_u, eps_src, eps_full = pred.chunk(3)
        return cumulative_guidance(eps_u, eps_src, eps_full, w_src, w_fuse)
    eps_u, eps_src, eps_focal, eps_full = pred.chunk(4)
    return focal_cumulative_guidance(eps_u, eps_src, eps_focal, eps_full, w_src, w_focal, w_fuse)
