"""Cumulative classifier-free guidance of FPDM and the branch layout of its batched call."""

from __future__ import annotations

import torch

# Order of the three branches in the batched UNet call: (drop_pose, drop_source, drop_fusion).
BRANCHES: tuple[tuple[str, tuple[bool, bool, bool]], ...] = (
    ("uncond", (True, True, True)),  # no pose, no source, no F
    ("src", (False, False, True)),  # pose + source, no F
    ("full", (False, False, False)),  # pose + source + F
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


def branch_drop_masks(batch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Drop masks (3B,) for the [uncond; src; full] batch, as keyword args of the denoiser."""
    masks = torch.tensor([flags for _, flags in BRANCHES], dtype=torch.bool)  # (3, 3)
    masks = masks.repeat_interleave(batch, dim=0).to(device)  # (3B, 3)
    return {
        "drop_pose": masks[:, 0],
        "drop_source": masks[:, 1],
        "drop_fusion": masks[:, 2],
    }
