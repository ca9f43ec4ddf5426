"""Save Videos (from frames), through the standalone host: frames of several videos (a batch's decode,
or what ComfyUI-Distributed's Distributed Collector returns on the master) become one mp4 per whole
video, with ComfyUI's counter naming; frames that make no whole video are not saved.

Each video here is one flat colour (video i: grey level 40 + 60 i), so a decoded mp4 says which video
it holds: H.264 at crf 19 keeps a flat frame within a level or two (measured: 0 to 1), far from the
60 levels between two videos, so a split at the wrong frame or in the wrong order fails.
"""

from __future__ import annotations

import importlib
import json
import logging

import av
import numpy as np
import pytest
import torch

from helpers import PACK, load_pack_standalone, request_interrupt

pack = load_pack_standalone()
save_frames = importlib.import_module(f"{PACK}.nodes.save_frames")
host = importlib.import_module(f"{PACK}.nodes.host")
NODE = pack.NODE_CLASS_MAPPINGS["LongLiveSaveFrames"]
SIZE = (32, 48)  # height, width
LEVEL_TOLERANCE = 3  # grey levels: a flat frame through H.264 at crf 19 (measured 0 to 1)


def level(video: int) -> int:
    return 40 + 60 * video


def videos(count: int, frames: int, extra: int = 0) -> torch.Tensor:
    """`count` videos of `frames` flat frames each (video i at level(i)), then `extra` frames of a
    further video cut short."""
    parts = [torch.full((frames, *SIZE, 3), level(i) / 255) for i in range(count)]
    parts.append(torch.full((extra, *SIZE, 3), level(count) / 255))
    return torch.cat(parts)


def latent(latent_frames: int, ref_frames: int = 0, batch: int = 1) -> dict:
    """A sampler's LATENT: `batch` videos of `latent_frames` frames, the first `ref_frames` of them
    references."""
    samples = {"samples": torch.zeros(batch, 16, latent_frames, SIZE[0] // 8, SIZE[1] // 8)}
    if ref_frames:
        samples["longlive_ref_frames"] = ref_frames
    return samples


def save(images: torch.Tensor, **inputs) -> dict:
    return NODE().save(images=images, **{"filename_prefix": "video/Distributed", "fps": 16, "crf": 19, **inputs})


def decoded(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)


def saved_files(result: dict, output_dir) -> list:
    return [output_dir / item["subfolder"] / item["filename"] for item in result["ui"]["images"]]


def test_frames_of_several_videos_become_one_mp4_each_in_order(output_dir):
    """Three videos of 9 frames (3 latent frames after 1 reference frame): three mp4s with consecutive
    counters, each holding its own video whole; reported under "images" as core SaveVideo reports."""
    (output_dir / "video").mkdir(parents=True)
    (output_dir / "video" / "Distributed_00001_.mp4").write_bytes(b"a user's file")
    result = save(videos(3, 9), samples=latent(4, ref_frames=1))
    assert result["ui"]["images"] == [{"filename": f"Distributed_0000{n}_.mp4", "subfolder": "video", "type": "output"}
                                      for n in (2, 3, 4)]
    assert result["ui"]["animated"] == (True,) and result["result"] == ()
    assert (output_dir / "video" / "Distributed_00001_.mp4").read_bytes() == b"a user's file"
    for video, path in enumerate(saved_files(result, output_dir)):
        frames = decoded(path)
        assert frames.shape == (9, *SIZE, 3)
        assert np.abs(frames - level(video)).max() <= LEVEL_TOLERANCE, (video, path)


def test_every_participants_batch_comes_back_as_its_videos(output_dir):
    """The master's batch of 2 and a worker's batch of 2, collected (4 videos of 5 frames): 4 mp4s,
    in the order the collector put them."""
    result = save(videos(4, 5), samples=latent(2, batch=2))
    paths = saved_files(result, output_dir)
    assert len(paths) == 4
    for video, path in enumerate(paths):
        assert np.abs(decoded(path) - level(video)).max() <= LEVEL_TOLERANCE, video


def test_frames_that_make_no_whole_video_are_not_saved(output_dir, caplog):
    """A worker that stopped while sending its frames: the master's whole video is saved, the 4
    frames after it are not, and the log says so."""
    with caplog.at_level(logging.WARNING):
        result = save(videos(1, 9, extra=4), samples=latent(3))
    [path] = saved_files(result, output_dir)
    assert decoded(path).shape[0] == 9 and np.abs(decoded(path) - level(0)).max() <= LEVEL_TOLERANCE
    assert "4 frames left over after 1 whole video(s) of 9 frames are not saved" in caplog.text


@pytest.mark.parametrize("frames", [0, 5])
def test_fewer_frames_than_one_video_save_nothing(output_dir, frames, caplog):
    """Half of a video (what dividing one participant's frames by two gives) or no frames at all
    (the master's own part when a worker ran the prompt alone): no file, an empty list."""
    with caplog.at_level(logging.WARNING):
        result = save(videos(0, 9, extra=frames), samples=latent(3))
    assert result["ui"]["images"] == []
    assert not output_dir.exists() or not any(output_dir.rglob("*.mp4"))
    assert f"no whole video among {frames} frames: nothing saved" in caplog.text


def test_without_the_latent_all_frames_are_one_video(output_dir):
    result = save(videos(2, 5))
    [path] = saved_files(result, output_dir)
    frames = decoded(path)
    assert frames.shape[0] == 10
    assert np.abs(frames[:5] - level(0)).max() <= LEVEL_TOLERANCE
    assert np.abs(frames[5:] - level(1)).max() <= LEVEL_TOLERANCE


def test_frames_per_video_counts_the_frames_a_latent_decodes_to():
    assert save_frames.frames_per_video(latent(21)) == 81
    assert save_frames.frames_per_video(latent(22, ref_frames=1)) == 81  # the reference frame is dropped
    assert save_frames.frames_per_video(latent(21, batch=3)) == 81  # a batch: each of its videos
    assert save_frames.whole_videos(170, 81) == (2, 8)


def test_bad_inputs_are_refused_naming_the_input(output_dir):
    with pytest.raises(ValueError, match=r"images: frames of 47x32: an mp4 \(H.264, yuv420p\) needs an even"):
        save(torch.zeros(9, 32, 47, 3))
    with pytest.raises(ValueError, match=r"images: expected video frames \[frames, height, width, 3\], got \(9, 32\)"):
        save(torch.zeros(9, 32))
    with pytest.raises(ValueError, match=r"samples: expected Wan 2.1 video latents \[videos, 16, frames, h, w\]"):
        save(videos(1, 9), samples={"samples": torch.zeros(1, 4, 8, 8)})
    assert not output_dir.exists()


def test_the_workflow_is_written_into_every_mp4(output_dir):
    result = save(videos(2, 5), samples=latent(2), prompt={"1": {"class_type": "X"}},
                  extra_pnginfo={"workflow": {"nodes": []}})
    for path in saved_files(result, output_dir):
        with av.open(str(path)) as container:
            assert json.loads(container.metadata["prompt"]) == {"1": {"class_type": "X"}}
            assert json.loads(container.metadata["workflow"]) == {"nodes": []}


def test_cancel_between_videos_keeps_the_finished_ones_whole(output_dir, monkeypatch):
    """Cancel pressed while the first mp4 is written: it is finished whole, the second is never
    started, and the prompt ends interrupted (nothing reported as saved)."""
    writer = save_frames.VideoWriter

    class CancelDuringWrite(writer):
        def write(self, frames):
            super().write(frames)
            request_interrupt()

    monkeypatch.setattr(save_frames, "VideoWriter", CancelDuringWrite)
    with pytest.raises(host.InterruptProcessingException):
        save(videos(2, 5), samples=latent(2))
    assert not host.is_interrupted()
    assert [p.name for p in sorted(output_dir.rglob("*.mp4"))] == ["Distributed_00001_.mp4"]
    assert decoded(output_dir / "video" / "Distributed_00001_.mp4").shape[0] == 5
