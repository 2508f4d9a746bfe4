"""LPIPS through the ``lpips`` package (Zhang et al., CVPR 2018), AlexNet, offline.

``lpips.LPIPS(net='alex')`` normally asks torchvision to download the ImageNet AlexNet
backbone. Here it is built with ``pnet_rand=True`` (no download) and the backbone is then
loaded from a user-supplied torchvision ``alexnet-owt-7be5be79.pth`` state dict
(``torch.load(weights_only=True)``). The learned linear heads (``weights/v0.1/alex.pth``)
ship inside the ``lpips`` package and are loaded by it as usual. Inputs are RGB scaled to
[-1, 1]; every image is scored (no partial batch is dropped).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from signgen.errors import FormatError, MissingWeightsError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


def load_alexnet_features(path: str | Path | None) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a torchvision AlexNet state dict, keys without prefix."""
    if not path or not Path(path).is_file():
        where = f" ({path} does not exist)" if path else ""
        raise MissingWeightsError(
            f"LPIPS needs the torchvision AlexNet backbone {ALEXNET_FILE}{where}: download it "
            f"on a machine with internet from {ALEXNET_URL} and pass --lpips-weights PATH"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(f"{path} is not a torch state dict ({exc})".splitlines()[0]) from None
    feats = {k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")}
    if not feats:
        raise FormatError(f"{path} has no 'features.*' tensors: not a torchvision AlexNet")
    return feats


def build_lpips(alexnet_weights: str | Path | None) -> nn.Module:
    """``lpips.LPIPS(net='alex')`` with the backbone from ``alexnet_weights``, in eval mode."""
    import lpips

    features = load_alexnet_features(alexnet_weights)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False)
    # lpips' alexnet splits torchvision's ``features`` into slice1..slice5 and keeps each
    # layer's index as its name, so features.<i>.weight lives at slice<k>.<i>.weight.
    target = {}
    for name, _ in model.net.named_parameters():
        _, idx, param = name.split(".")  # slice<k>.<i>.<weight|bias>
        target[name] = features.get(f"{idx}.{param}")
    missing = [k for k, v in target.items() if v is None]
    if missing:
        raise FormatError(f"{alexnet_weights} lacks AlexNet tensors for {missing[:3]}...")
    try:
        model.net.load_state_dict(target, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"{alexnet_weights}: {str(exc).splitlines()[0]}") from None
    return model.eval().requires_grad_(False)


class LPIPSMetric:
    """Batched LPIPS of uint8 (B, 3, H, W) pairs -> (B,) float64."""

    name = "lpips-alex-v0.1"

    def __init__(self, alexnet_weights: str | Path | None, device: str | torch.device):
        self.device = torch.device(device)
        self.model = build_lpips(alexnet_weights).to(self.device)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        p = pred.to(self.device).float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        g = gt.to(self.device).float() / 127.5 - 1.0
        return self.model(p, g).reshape(-1).double().cpu()  # (B,)
