"""Time before the run: the FLOPs model, the GPU table and the CPU probe against a measured step."""
from __future__ import annotations

from pathlib import Path

import pytest

from studio import models, speed
from studio.train import cpu_probe


def test_the_gpu_rate_is_an_assumption_scaled_by_each_gpus_peak():
    """The GPU efficiency is derived from one quoted figure (speed.ANCHOR) that no GPU run of this project has
    measured, so its own figure coming back is a consistency check of the FLOPs model, not evidence of a real
    speed; what is tested is that GPUs scale by their peak and that every estimate says it is assumed."""
    info = models.resolve(speed.ANCHOR["model"])
    rate, basis = speed.estimate_gpu(info, speed.ANCHOR["settings"], "NVIDIA GeForce RTX 4090")
    assert rate == pytest.approx(speed.ANCHOR["tokens_per_s"])  # consistency only (the efficiency comes from it)
    assert basis.startswith("an assumption until a run on this GPU calibrates it")
    h100, _ = speed.estimate_gpu(info, speed.ANCHOR["settings"], "NVIDIA H100 80GB HBM3")
    assert h100 / rate == pytest.approx(989 / 165.2)
    unknown, text = speed.estimate_gpu(info, speed.ANCHOR["settings"], "Some Future GPU")
    assert unknown == pytest.approx(rate) and "not in the table" in text
    assert 0.2 < speed.gpu_efficiency() < 0.9  # a plausible fraction of the datasheet peak


def test_checkpointing_and_length_cost_what_they_should():
    info = models.resolve("llama-3.1-8b-instruct")
    s = dict(speed.ANCHOR["settings"])
    plain, _ = speed.step_flops(info, {**s, "train.grad_ckpt": False})
    ckpt, _ = speed.step_flops(info, s)
    assert 1.3 < ckpt / plain < 1.6  # one more forward of the layers: about a third more work
    short, _ = speed.step_flops(info, {**s, "train.seq_len": 512})
    assert short < ckpt  # attention grows with the length


def test_run_length_and_duration():
    assert speed.run_steps(60, 1.0, None, 16) == 60
    assert speed.run_steps(-1, 2.0, 100, 16) == 13
    assert speed.run_steps(-1, 1.0, None, 16) is None
    info = models.resolve("smollm2-135m-instruct")
    s = {**speed.ANCHOR["settings"], "train.seq_len": 512}
    est = speed.estimate(info, s, "cuda", gpu_name="RTX 4090", steps=10)
    assert est.seconds == pytest.approx(10 * est.step_seconds)
    assert est.step_seconds == pytest.approx(16 * 512 / est.tokens_per_s)
    assert speed.estimate(info, s, "cpu", rates=None) is None  # never probed: no guess


def test_cpu_estimate_is_within_a_factor_of_1_5_of_a_measured_step(tmp_path):
    """The probe (a matmul rate and three tiny models) predicts the step time of another, differently
    shaped tiny model trained the same way.

    The check model is timed in the same interleaved rounds as the probe's own models, each keeping
    its fastest round, so a busy machine slows both sides alike instead of one of them; a second and
    third try only guard against a burst that lasts the whole probe (a wrong model fails all three).
    """
    ratios = []
    for attempt in range(3):
        check = cpu_probe.step_runner(tmp_path / "check", hidden=128, layers=3, seq=128, micro_batch=2)
        rates = cpu_probe.probe_cpu(tmp_path / f"probe{attempt}", rounds=5, extra=[check])
        info, s, _ = check
        rate, _ = speed.estimate_cpu(info, s, rates)
        ratios.append(s["train.micro_batch"] * s["train.seq_len"] / rate / rates["extra_seconds"][0])
        if 1 / 1.5 <= ratios[-1] <= 1.5:
            break
    assert 1 / 1.5 <= ratios[-1] <= 1.5, ratios
    assert rates["flops_per_s"] > 1e9 and all(rates[k] >= 0 for k in speed.RATE_KEYS)


def test_the_overhead_fit_recovers_known_costs_and_never_goes_negative():
    c0, c, e = 0.003, 0.002, 2e-8
    rows = [(c0 + p * c + n * e, 1.0, p, n) for p, n in ((4, 2.4e5), (12, 7.4e5), (4, 3.1e6))]
    fit = cpu_probe.fit_overheads(rows)
    assert fit["seconds_per_micro_batch"] == pytest.approx(c0, rel=1e-6)
    assert fit["seconds_per_layer_pass"] == pytest.approx(c, rel=1e-6)
    assert fit["seconds_per_element"] == pytest.approx(e, rel=1e-6)
    noisy = [(0.010, 1.0, 4, 2.4e5), (0.009, 1.0, 12, 7.4e5), (0.030, 1.0, 4, 3.1e6)]  # more layers, less time
    assert all(v >= 0 for v in cpu_probe.fit_overheads(noisy).values())


RATES = {"flops_per_s": 2e10, "seconds_per_layer_pass": 0.02, "seconds_per_element": 1e-8,
         "seconds_per_micro_batch": 0.001}


def test_the_probe_is_cached_per_machine_and_measured_again_when_old(monkeypatch):
    assert speed.cpu_rates() is None
    monkeypatch.setattr(cpu_probe, "probe_cpu", lambda workdir: dict(RATES))
    measured = cpu_probe.measure_and_cache()
    assert {k: speed.cpu_rates()[k] for k in speed.RATE_KEYS} == RATES
    assert speed.cpu_rates()["measured_at"] == measured["measured_at"]
    assert speed.machine_key() in speed._cache_file().name
    import json
    import time

    raw = json.loads(speed._cache_file().read_text())
    speed._cache_file().write_text(json.dumps({**raw, "measured_at": time.time() - speed.PROBE_MAX_AGE_S - 1}))
    assert speed.cpu_rates() is None  # too old: the Plan page and `plan` probe again
    speed._cache_file().write_text(json.dumps({**raw, "probe_version": speed.PROBE_VERSION - 1}))
    assert speed.cpu_rates() is None  # another probe's figures


def test_runs_calibrate_the_next_estimate():
    info = models.resolve("smollm2-135m-instruct")
    s = {**speed.ANCHOR["settings"], "train.seq_len": 256, "train.micro_batch": 4, "train.grad_accum": 1,
         "train.grad_ckpt": False, "quant.compute_dtype": "float32"}
    rates = {**RATES, "measured_at": 1000.0}
    raw = speed.estimate(info, s, "cpu", rates=rates, example_tokens=96)
    assert speed.calibration("cpu", rates=rates) is None
    for run, measured in (("a", 0.5), ("b", 0.25), ("c", 0.3)):
        speed.record_run(run, "cpu", predicted_s=1.0, measured_s=measured, steps=10, probe=1000.0)
    speed.record_run("other-probe", "cpu", predicted_s=1.0, measured_s=9.0, steps=10, probe=999.0)
    speed.record_run("gpu", "cuda", predicted_s=1.0, measured_s=9.0, steps=10, gpu_name="RTX 4090")
    speed.record_run("grpo", "cpu", predicted_s=1.0, measured_s=0.05, steps=10, probe=1000.0, sampling=True)
    cal = speed.calibration("cpu", rates=rates)
    assert cal == {"factor": 0.3, "runs": 3}  # the median; other probes, devices and grpo runs do not count
    assert speed.calibration("cpu", rates=rates, sampling=True) == {"factor": 0.05, "runs": 1}
    est = speed.estimate(info, s, "cpu", rates=rates, example_tokens=96, calibration=cal, mean_tokens=80)
    assert est.step_seconds == pytest.approx(0.3 * raw.step_seconds)
    assert est.tokens_per_s == pytest.approx(4 * 80 / est.step_seconds)  # real tokens, as the worker counts them
    assert "last 3 runs on this machine" in est.basis
    assert speed.calibration("cuda", "NVIDIA GeForce RTX 4090") == {"factor": 9.0, "runs": 1}
    speed.record_run("a", "cpu", predicted_s=1.0, measured_s=0.6, steps=10, probe=1000.0)  # a run re-recorded
    assert speed.calibration("cpu", rates=rates) == {"factor": 0.3, "runs": 3}


def test_the_worker_records_its_measured_step_time(tiny_model_dir, monkeypatch):
    from studio.recipe import Recipe
    from studio.train.speedlog import StepTimes

    monkeypatch.setattr(speed, "cpu_rates", lambda: {**RATES, "measured_at": 5.0})
    r = Recipe()
    r.model.name_or_path = str(tiny_model_dir)
    r.quant.mode, r.quant.compute_dtype, r.train.seq_len, r.train.micro_batch = "4bit", "float32", 128, 2
    timer = StepTimes(Path("/runs/run-1"), r, "cpu", lengths=[40] * 19 + [100])
    timer.durations = [3.0, 0.2, 0.25, 0.21, 1.5]  # warm-up first step; an evaluation's step is the median's outlier
    timer.record()
    cal = speed.calibration("cpu", rates={"measured_at": 5.0})
    info = models.resolve(str(tiny_model_dir))
    from studio.recipe import PLANNED, get_setting

    predicted = speed.estimate(info, {k: get_setting(r, k) for k in PLANNED}, "cpu", rates=RATES,
                               example_tokens=100).step_seconds
    assert cal["runs"] == 1 and cal["factor"] == pytest.approx(0.23 / predicted)
    short = StepTimes(Path("/runs/run-2"), r, "cpu", lengths=[40])
    short.durations = [3.0, 0.2]
    short.record()  # too few steps to say anything
    assert speed.calibration("cpu", rates={"measured_at": 5.0})["runs"] == 1


def test_a_grpo_run_calibrates_the_grpo_estimate_and_not_the_sft_one(tiny_model_dir, monkeypatch):
    """A grpo step is mostly decoding, which the estimate models apart (sampling_seconds): its measured/predicted
    ratio is kept under a key of its own, predicted with the sampling the planner counts for it."""
    from studio.recipe import PLANNED, Recipe, get_setting
    from studio.settings import SHAPE
    from studio.train.speedlog import StepTimes

    monkeypatch.setattr(speed, "cpu_rates", lambda: {**RATES, "measured_at": 5.0})
    r = Recipe()
    r.model.name_or_path = str(tiny_model_dir)
    r.quant.mode, r.quant.compute_dtype, r.train.seq_len, r.train.micro_batch = "4bit", "float32", 128, 4
    r.train.objective, r.train.grpo_generations, r.train.grpo_completion_len = "grpo", 4, 32
    timer = StepTimes(Path("/runs/grpo-1"), r, "cpu", [], p95=60)
    timer.durations = [9.0, 2.0, 2.2, 2.1]
    timer.record()
    rates = {"measured_at": 5.0}
    assert speed.calibration("cpu", rates=rates) is None  # SFT estimates keep their own ratio
    cal = speed.calibration("cpu", rates=rates, sampling=True)
    info = models.resolve(str(tiny_model_dir))
    settings = {k: get_setting(r, k) for k in PLANNED + SHAPE}
    raw = speed.estimate(info, settings, "cpu", rates=RATES, example_tokens=60)
    assert speed.sampling_seconds(info, settings, "cpu", RATES, 60) > 0  # the prediction counted the sampling
    assert cal == {"factor": pytest.approx(2.1 / raw.step_seconds), "runs": 1}
    est = speed.estimate(info, settings, "cpu", rates=RATES, example_tokens=60, calibration=cal)
    assert est.step_seconds == pytest.approx(2.1)
    assert "the last grpo run on this machine" in est.basis


def test_a_gpu_estimate_says_it_is_assumed_until_runs_calibrate_it():
    from studio import planview

    info = models.resolve("llama-3.1-8b-instruct")
    s = dict(speed.ANCHOR["settings"])
    est = speed.estimate(info, s, "cuda", "NVIDIA GeForce RTX 4090", steps=100)
    assert est.assumed and speed.describe(est).startswith("Assumed speed about")
    calibrated = speed.estimate(info, s, "cuda", "NVIDIA GeForce RTX 4090", steps=100,
                                calibration={"factor": 1.25, "runs": 3})
    assert not calibrated.assumed and speed.describe(calibrated).startswith("Expected speed about")
    assert calibrated.step_seconds == pytest.approx(est.step_seconds * 1.25)

    class _Plan:
        device, estimate = "cuda", est
    assert "An assumption, not a measurement" in planview.speed_text(_Plan())
    _Plan.estimate = calibrated
    assert "assumption" not in planview.speed_text(_Plan()).lower()


def test_the_anchor_speaks_the_plans_vocabulary_with_its_defaults():
    """One vocabulary: the anchor's settings are a plan's settings dict, every key the plan has, its stated values
    kept and the rest the plan's defaults (no second set of defaults in speed.py)."""
    from studio.settings import Settings

    anchor = speed.ANCHOR["settings"]
    assert list(anchor) == list(Settings().to_dict())
    assert Settings.from_dict(anchor).to_dict() == anchor
    assert (anchor["train.seq_len"], anchor["lora.rank"], anchor["train.optimizer"]) == (2048, 16, "adamw_8bit")
