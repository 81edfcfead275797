"""Episode videos: one episode rendered headless (EGL) to an animated GIF or an MP4."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nfhiql_core.atomic_io import atomic_open
from nfhiql_core.errors import ConfigError

VIDEO_FRAME_SKIP = 3  # render every 3rd step, like OGBench's `video_frame_skip`
VIDEO_FPS = 15


def check_video_path(path: Path) -> None:
    """Fail before any episode runs if the video cannot be written."""
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ConfigError(f"{path}: video path must end in .gif or .mp4")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (imageio's mp4 backend)
        except ImportError:
            raise ConfigError(f"{path}: writing .mp4 needs imageio-ffmpeg; use a .gif path") from None


def write_video(frames: list[np.ndarray], path: Path) -> None:
    """Write frames as an animated GIF (PIL) or, for '.mp4', with imageio-ffmpeg; atomically."""
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        with atomic_open(path, "wb") as f:
            images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=1000 // VIDEO_FPS, loop=0)
    else:
        import imageio.v2 as imageio

        tmp = path.with_name(f".{path.stem}.tmp.mp4")  # ffmpeg picks the container from the suffix
        imageio.mimwrite(tmp, frames, fps=VIDEO_FPS)
        os.replace(tmp, path)


class EpisodeFilm:
    """Frames of one episode: the first state, then every VIDEO_FRAME_SKIP-th step and the last."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_video_path(self.path)
        self.frames: list[np.ndarray] = []

    def shoot(self, env, step: int, last: bool = False) -> None:
        if step == 0 or last or step % VIDEO_FRAME_SKIP == 0:
            self.frames.append(env.render().copy())

    def write(self) -> None:
        write_video(self.frames, self.path)
