"""Cumulative classifier-free guidance (FPDM Eq. 12) for a chain of any number of branches.

FPDM guides along a chain of branches, each adding conditions to the one before: uncond
(nothing), src (pose + source tokens), full (+ the fusion embedding F). Multi-focal
conditioning (MCLD) inserts a focal branch (+ the face/hand focal tokens) before full.
With predictions eps_0 .. eps_K of the K + 1 branches and weights w_1 .. w_K,

    eps = eps_0 + sum_k w_k (eps_k - eps_{k-1})                      (:func:`cumulative_guidance`)

which is FPDM's eps_u + W_SRC (eps_src - eps_u) + W_FUSE (eps_full - eps_src) for three
branches and its MCLD extension for four. It is linear in the predictions, so it applies to
any prediction type (epsilon, v, sample), and expands to sum_k c_k eps_k with
c_0 = 1 - w_1, c_k = w_k - w_{k+1}, c_K = w_K (:func:`chain_coefficients`, summing to 1).
A branch whose c_k is 0 contributes nothing, so a sampler need not run it
(:class:`GuidancePlan`, ``skip_zero``): no guidance (all weights 1) runs ``full`` alone,
the paper's 2, 2 runs ``uncond`` and ``full``. All the branches that do run share ONE
batched UNet call per step, [branch 0; branch 1; ...] along the batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Every condition a branch may hold; a branch drops (nulls) those it does not hold.
CONDITIONS = ("pose", "source", "fusion", "focal")


@dataclass(frozen=True)
class Branch:
    """One link of the guidance chain: its name and the conditions the UNet receives."""

    name: str
    conditions: frozenset[str]


def fpdm_chain(focal: bool = False) -> tuple[Branch, ...]:
    """FPDM's chain [uncond; src; full], or with MCLD focal tokens [uncond; src; focal; full]."""
    links = [("src", {"pose", "source"})] + ([("focal", {"focal"})] if focal else [])
    links.append(("full", {"fusion"}))
    chain, held = [Branch("uncond", frozenset())], set()
    for name, added in links:
        held |= added
        chain.append(Branch(name, frozenset(held)))
    return tuple(chain)


def chain_coefficients(weights: Sequence[float]) -> tuple[float, ...]:
    """Weights w_1 .. w_K of the chain formula -> the coefficient c_k of each prediction
    eps_0 .. eps_K in its expansion: c_0 = 1 - w_1, c_k = w_k - w_{k+1}, c_K = w_K."""
    w = [float(v) for v in weights]
    assert w, "the guidance chain needs at least two branches"
    return (1.0 - w[0], *(a - b for a, b in itertools.pairwise(w)), w[-1])


def cumulative_guidance(
    preds: Sequence[torch.Tensor | None], weights: Sequence[float]
) -> torch.Tensor:
    """FPDM's cumulative guidance (Eq. 12 of "Fusion Embedding for Pose-Guided Person Image
    Synthesis with Diffusion Model"; after Ho & Salimans 2021) over a chain of branches:
    eps = eps_0 + sum_k w_k (eps_k - eps_{k-1}).

    ``preds`` eps_0 .. eps_K (K = len(weights)); a prediction may be None where its
    coefficient (:func:`chain_coefficients`) is 0: it is summed as the expansion
    sum_k c_k eps_k, term by term in branch order, in which such a branch drops out.
    """
    coef = chain_coefficients(weights)
    assert len(preds) == len(coef), (len(preds), len(coef))
    missing = [k for k, (c, p) in enumerate(zip(coef, preds)) if c != 0 and p is None]
    if missing:
        raise ValueError(f"branches {missing} have non-zero guidance weight but were not run")
    terms = [(c, p) for c, p in zip(coef, preds) if p is not None]
    out = terms[0][1] * terms[0][0]
    for c, p in terms[1:]:
        out = out + p * c
    return out


@dataclass(frozen=True)
class GuidancePlan:
    """Which branches one denoising step runs, and how their predictions combine.

    ``chain`` the branches (:func:`fpdm_chain`), ``weights`` w_1 .. w_K. ``skip_zero``
    (default): run only the branches whose coefficient is not 0; False runs every branch
    (the same result up to float rounding, for measuring what skipping saves).
    """

    chain: tuple[Branch, ...]
    weights: tuple[float, ...]
    skip_zero: bool = True

    def __post_init__(self) -> None:
        assert len(self.weights) == len(self.chain) - 1, (self.weights, self.chain)

    @property
    def run(self) -> tuple[int, ...]:
        """Indices (chain order) of the branches the batched UNet call holds."""
        coef = chain_coefficients(self.weights)
        return tuple(k for k, c in enumerate(coef) if c != 0 or not self.skip_zero)

    @property
    def num_branches(self) -> int:
        return len(self.run)

    def drop_masks(self, batch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``drop_<condition>`` keyword arguments of the denoiser for the batched call:
        (n B,) bool each, branch after branch (n = :attr:`num_branches`), B rows each;
        ``drop_focal`` only for a chain with a focal branch."""
        names = [
            c for c in CONDITIONS if c != "focal" or any(b.name == "focal" for b in self.chain)
        ]
        rows = [[c not in self.chain[k].conditions for c in names] for k in self.run]
        masks = torch.tensor(rows, dtype=torch.bool)  # (n, conditions)
        masks = masks.repeat_interleave(batch, dim=0).to(device)  # (n B, conditions)
        return {f"drop_{c}": masks[:, i] for i, c in enumerate(names)}

    def combine(self, pred: torch.Tensor) -> torch.Tensor:
        """The batched predictions (n B, ...) of the branches run -> the guided (B, ...)."""
        parts = dict(zip(self.run, pred.chunk(self.num_branches)))
        return cumulative_guidance([parts.get(k) for k in range(len(self.chain))], self.weights)
