"""The kernels' launch tuner: the default off CUDA, the fastest candidate (once per key) where it times."""

import pytest
import torch

pytest.importorskip("triton")  # the kernels package imports it

from stdd_fast.kernels import launch_tuning
from stdd_fast.kernels.launch_tuning import LaunchTuner

CANDIDATES = [{"tile": 32}, {"tile": 64}, {"tile": 128}]


def test_cpu_takes_the_default_without_launching():
    launched = []
    tuner = LaunchTuner("demo")
    config = tuner.pick("key", CANDIDATES, launched.append, torch.device("cpu"))
    assert config == CANDIDATES[0] and launched == [] and tuner.chosen == {}


def test_tuning_keeps_the_fastest_and_times_each_key_once(monkeypatch):
    speed = {32: 3.0, 64: 1.0, 128: 2.0}
    timed = []

    def fake_time(launch):
        config = launch()
        timed.append(config["tile"])
        return speed[config["tile"]]

    monkeypatch.setattr(launch_tuning, "_tuning_enabled", lambda device: True)
    monkeypatch.setattr(launch_tuning, "_time_ms", fake_time)
    tuner = LaunchTuner("demo")
    assert tuner.pick("a", CANDIDATES, lambda c: c, torch.device("cuda")) == {"tile": 64}
    assert tuner.pick("a", CANDIDATES, lambda c: c, torch.device("cuda")) == {"tile": 64}
    assert timed == [32, 64, 128]  # the second call reuses the choice
    assert [ms for _, ms in tuner.timings["a"]] == [3.0, 1.0, 2.0]


def test_opt_out_and_graph_capture_disable_tuning(monkeypatch):
    monkeypatch.setenv("STDD_TUNE_KERNELS", "0")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not launch_tuning._tuning_enabled(torch.device("cuda"))
    monkeypatch.setenv("STDD_TUNE_KERNELS", "1")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not launch_tuning._tuning_enabled(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert launch_tuning._tuning_enabled(torch.device("cuda"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not launch_tuning._tuning_enabled(torch.device("cuda"))


def test_candidates_the_gpu_cannot_launch_are_skipped(monkeypatch):
    from triton.runtime.errors import OutOfResources

    def fake_time(launch):
        config = launch()
        if config["tile"] == 128:
            raise OutOfResources(300_000, 232_448, "shared memory")
        return {32: 2.0, 64: 3.0}[config["tile"]]

    monkeypatch.setattr(launch_tuning, "_tuning_enabled", lambda device: True)
    monkeypatch.setattr(launch_tuning, "_time_ms", fake_time)
    tuner = LaunchTuner("demo")
    assert tuner.pick("a", CANDIDATES, lambda c: c, torch.device("cuda")) == {"tile": 32}
    assert tuner.timings["a"][2][1] == float("inf")
