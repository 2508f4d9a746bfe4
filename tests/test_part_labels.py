"""Part labels of the synthetic world: they match the rendered pixels, and the world writes them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from signgen.cli import main
from signgen.data.pairs import read_manifest
from signgen.data.synthetic import (
    BACKGROUND,
    HEAD,
    LEFT_ARM,
    LEFT_HAND,
    RIGHT_ARM,
    RIGHT_HAND,
    TORSO,
    _layers,
    load_part_masks,
    render_part_labels,
    render_signer,
    sample_motion,
    sample_signer,
)
from signgen.errors import InputError
from signgen.keypoints import layout as L

SIZE = (210, 260)


def _dilate(mask: np.ndarray, px: int = 2) -> np.ndarray:
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k) > 0


def _poses(seed: int, n: int = 4):
    rng = np.random.default_rng(seed)
    for k in range(n):
        signer = sample_signer(rng, f"S{k}")
        yield signer, sample_motion(rng, 6, SIZE, signer.body)


def test_background_labels_show_the_background_layer():
    for signer, pts in _poses(0):
        for t in (0, 5):
            img = render_signer(signer.appearance, pts[t], SIZE)
            lab = render_part_labels(signer.appearance, pts[t], SIZE)
            assert lab.shape == (SIZE[1], SIZE[0]) and lab.dtype == np.uint8
            bg = _layers(signer.appearance, SIZE).background
            # Away from the antialiased edge of the figure (2 px), a background pixel is
            # exactly the background layer, and the figure covers a real area.
            far = ~_dilate(lab != BACKGROUND)
            assert np.array_equal(img[far], bg[far])
            assert (lab != BACKGROUND).mean() > 0.2
            assert {TORSO, LEFT_ARM, RIGHT_ARM, HEAD, LEFT_HAND, RIGHT_HAND} <= set(np.unique(lab))


def test_hand_labels_sit_on_the_hand_keypoints():
    for signer, pts in _poses(1):
        lab = render_part_labels(signer.appearance, pts[0], SIZE)
        for idx, value in ((L.LEFT_HAND_KNUCKLE, LEFT_HAND), (L.RIGHT_HAND_KNUCKLE, RIGHT_HAND)):
            x, y = np.round(pts[0, idx, :2]).astype(int)
            assert lab[y, x] == value


def test_moving_one_arm_changes_pixels_only_where_its_labels_change():
    rng = np.random.default_rng(2)
    for k in range(4):
        signer = sample_signer(rng, f"S{k}")
        pts = sample_motion(rng, 1, SIZE, signer.body)[0]
        moved = pts.copy()
        arm = [L.LEFT_ELBOW, L.LEFT_WRIST, *range(L.LEFT_HAND.start, L.LEFT_HAND.stop)]
        moved[arm, 0] -= 25.0  # the left forearm and hand swing towards the body
        moved[arm, 1] -= 10.0
        a, b = (render_signer(signer.appearance, p, SIZE) for p in (pts, moved))
        la, lb = (render_part_labels(signer.appearance, p, SIZE) for p in (pts, moved))
        changed = np.abs(a.astype(int) - b.astype(int)).max(-1) > 2
        relabelled = la != lb
        assert changed.sum() > 200
        # Every changed pixel is relabelled, up to the 2 px antialiased fringe (and a few
        # fringe pixels where the sleeve meets the shoulder disc, torso in both frames) ...
        assert (changed & ~_dilate(relabelled)).sum() <= 0.005 * changed.sum()
        # ... nearly every relabelled pixel changed (same colours on both sides are rare) ...
        assert (relabelled & changed).sum() >= 0.9 * relabelled.sum()
        # ... and only the left arm and hand were relabelled.
        assert set(np.unique(np.r_[la[relabelled], lb[relabelled]])) <= {
            BACKGROUND, TORSO, LEFT_ARM, LEFT_HAND, RIGHT_ARM, RIGHT_HAND, HEAD
        }  # fmt: skip
        assert np.isin(la[relabelled], [LEFT_ARM, LEFT_HAND]).any()
        assert (np.isin(la[relabelled], [LEFT_ARM, LEFT_HAND])
                | np.isin(lb[relabelled], [LEFT_ARM, LEFT_HAND])).all()  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    rc = main(["prepare", "synthetic", "-o", str(out), "--signers", "3", "--videos", "3",
               "--frames", "4", "--size", "64x80", "--seed", "1", "-q",
               "--pairs-per-video", "2"])  # fmt: skip
    assert rc == 0
    return out


def test_the_world_writes_the_labels_of_every_frame(world: Path):
    import json

    from signgen.keypoints.sequence import from_json_dict

    signers = {s["name"]: s for s in json.loads((world / "signers.json").read_text())}
    for entry in read_manifest(world / "prepared").values():
        labels = load_part_masks(world, entry.split, entry.video)
        assert labels.shape == (4, 80, 64) and labels.dtype == np.uint8
        pts = from_json_dict(json.loads(entry.keypoints_file.read_text()), "x").points
        from signgen.data.synthetic import SignerAppearance

        app = signers[entry.signer]["appearance"]
        app = SignerAppearance(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in app.items()})  # fmt: skip
        for t in range(4):
            assert np.array_equal(labels[t], render_part_labels(app, pts[t], (64, 80)))


def test_missing_labels_are_a_user_error(tmp_path: Path):
    with pytest.raises(InputError, match="part masks"):
        load_part_masks(tmp_path, "test", "nope")
