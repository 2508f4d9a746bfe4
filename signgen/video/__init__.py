"""Video I/O: decode (PyAV, decord on request; frame folders; images) and encode (PyAV).

All frames are RGB uint8, (H, W, 3) each or (N, H, W, 3) stacked.
"""

from __future__ import annotations

from signgen.video.decode import (
    BACKENDS,
    FRAMES_DIR_FPS,
    VideoInfo,
    iter_batches,
    iter_frames,
    probe,
    read_first_frame,
    read_frames,
)
from signgen.video.encode import VIDEO_SUFFIXES, VideoWriter, fps_fraction, write_video
from signgen.video.images import (
    IMAGE_SUFFIXES,
    is_image_file,
    list_frame_files,
    read_image,
    write_png_frames,
)

__all__ = [
    "BACKENDS",
    "FRAMES_DIR_FPS",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "VideoInfo",
    "VideoWriter",
    "fps_fraction",
    "is_image_file",
    "iter_batches",
    "iter_frames",
    "list_frame_files",
    "probe",
    "read_first_frame",
    "read_frames",
    "read_image",
    "write_png_frames",
    "write_video",
]
