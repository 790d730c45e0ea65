"""The CLI contract of `lora-studio plan` (and `probe`, `models`, the calibration script without a GPU)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from studio.cli import main

GiB = 1024 ** 3
ROOT = Path(__file__).resolve().parent.parent


def run_json(capsys, *argv) -> dict:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_contract(capsys):
    d = run_json(capsys, "--model", "llama-3.1-8b-instruct", "--vram-gb", "24")
    assert d["budget_bytes"] == 24 * GiB and d["fits"] is True
    assert set(d["settings"]) >= {"quant.mode", "quant.double_quant", "lora.rank", "lora.alpha", "lora.targets", "train.micro_batch", "train.grad_accum",
                                  "train.seq_len", "train.grad_ckpt", "train.attn", "train.optimizer", "quant.compute_dtype"}
    assert set(d["predicted"]) == {"peak_allocated_bytes", "peak_reserved_bytes", "device_total_bytes"}
    assert d["predicted"]["device_total_bytes"] <= 24 * GiB
    assert all(isinstance(v, int) for v in d["components"].values())
    assert d["reasons"] and all(r.endswith((".", ")")) for r in d["reasons"])


def test_given_settings_are_used_as_they_are(capsys):
    d = run_json(capsys, "--model", "llama-3.2-3b-instruct", "--vram-gb", "24", "--quant", "8bit", "--no-double-quant",
                 "--rank", "8", "--targets", "q_proj,v_proj", "--batch", "2", "--seq-len", "512", "--no-grad-ckpt",
                 "--attn", "eager", "--optimizer", "adamw_8bit")
    given = {"quant.mode": "8bit", "quant.double_quant": False, "lora.rank": 8, "lora.targets": ["q_proj", "v_proj"], "train.micro_batch": 2,
             "train.seq_len": 512, "train.grad_ckpt": False, "train.attn": "eager", "train.optimizer": "adamw_8bit"}
    assert {k: d["settings"][k] for k in given} == given
    assert d["settings"]["train.grad_accum"] == 8  # keeps the effective batch of 16


def test_no_fit_still_answers_with_a_suggestion(capsys):
    d = run_json(capsys, "--model", "llama-3.1-70b-instruct", "--vram-gb", "12")
    assert d["fits"] is False and d["suggestion"] and "--vram-gb" in d["suggestion"]


def test_text_output_has_a_bar_per_component(capsys):
    assert main(["plan", "--model", "qwen2.5-0.5b-instruct", "--vram-gb", "8"]) == 0
    out = capsys.readouterr().out
    assert "FITS in 8.0 GiB" in out and "peak allocated" in out and "nvidia-smi" in out
    assert sum(1 for line in out.splitlines() if line.rstrip().endswith(("#", ".")) and "GiB" in line) >= 5


@pytest.fixture(autouse=True)
def _probed_cpu():
    """This CPU's speed as if probed once (tests/test_speed.py runs the real probe)."""
    from studio import speed
    from studio.fsutil import atomic_write_json

    path = speed._cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    import time

    atomic_write_json(path, {"flops_per_s": 3e10, "seconds_per_layer_pass": 0.01, "seconds_per_element": 1e-8,
                             "seconds_per_micro_batch": 0.002, "probe_version": speed.PROBE_VERSION,
                             "measured_at": time.time()})


def test_without_a_gpu_the_plan_is_for_the_cpu(capsys):
    from studio import hardware

    plan = run_json(capsys, "--model", "smollm2-135m-instruct")
    assert plan["device"] == "cpu" and plan["budget_bytes"] == hardware.cpu_budget_bytes()
    s = plan["settings"]
    assert s["quant.mode"] == "4bit" and s["quant.compute_dtype"] == "float32"
    assert s["train.micro_batch"] <= 2 and s["train.seq_len"] <= 512
    assert "cuda_context" not in plan["components"] and "allocator_overhead" not in plan["components"]
    assert plan["reasons"][0].startswith("Training runs on the CPU")
    assert plan["estimate"]["tokens_per_s"] > 0 and plan["estimate"]["device"] == "cpu"
    gpu = run_json(capsys, "--model", "smollm2-135m-instruct", "--vram-gb", "24")  # a GPU budget plans for a GPU
    assert gpu["device"] == "cuda" and gpu["budget_bytes"] == 24 * GiB and "cuda_context" in gpu["components"]
    assert gpu["estimate"]["tokens_per_s"] > plan["estimate"]["tokens_per_s"]


@pytest.mark.parametrize("argv, words", [
    (["--model", "nowhere/none"], "not found"),
    (["--model", "demo", "--rank", "0"], "--rank 0"),
    (["--model", "demo", "--vram-gb", "-3"], "--vram-gb"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, argv, words):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_dataset_lengths_set_the_sequence_length(capsys, tiny_model_dir, chat_jsonl):
    d = run_json(capsys, "--model", str(tiny_model_dir), "--vram-gb", "8", "--dataset", str(chat_jsonl))
    assert d["settings"]["train.seq_len"] < 2048 and d["settings"]["train.seq_len"] % 64 == 0
    assert any("95th-percentile" in r for r in d["reasons"])


def test_probe_says_there_is_no_gpu(capsys):
    assert main(["probe", "--model", "demo"]) == 1
    out = capsys.readouterr().out
    assert "no NVIDIA GPU" in out and "nothing was run" in out


def test_probe_recipe_carries_the_settings_it_measures():
    """measure() takes the settings as recipe names (plan.settings.to_dict()); its recipe has each of them."""
    from studio.commands.probe import recipe_for
    from studio.settings import Settings

    wanted = {**Settings().to_dict(), "train.micro_batch": 3, "train.seq_len": 384, "lora.rank": 32,
              "train.tiled_head": False, "train.tiled_mlp": True, "train.offload_activations": True,
              "train.kernels": "torch"}
    recipe = recipe_for(wanted, dropout=0.1)
    assert (recipe.train.micro_batch, recipe.train.seq_len, recipe.lora.rank, recipe.lora.dropout) == (3, 384, 32, 0.1)
    t = recipe.train
    assert (t.tiled_head, t.tiled_mlp, t.offload_activations, t.kernels) == (False, True, True, "torch")


def test_probe_trains_with_the_workers_trainer(tmp_path):
    """The probe measures what the worker runs: on a random model saved from a config, its Trainer computes
    the loss through the tiled head (no logits come back) and takes the recipe's offloading setting; one
    real step trains on the CPU."""
    from studio.commands.probe import _random_batches, _trainer, random_model_folder, recipe_for
    from studio.settings import Settings
    from studio.train import long_context
    from studio.train.loading import load_model
    from studio.train.trainer import StudioTrainer

    settings = {**Settings().to_dict(), "train.micro_batch": 1, "train.grad_accum": 1, "train.seq_len": 32,
                "train.tiled_head": True, "train.offload_activations": True}
    recipe = recipe_for(settings)
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 384}
    model = load_model(random_model_folder(None, tmp_path / "model", config), recipe, "cpu")
    batches = _random_batches(model.config.vocab_size, 32, 1)
    steps: list[int] = []
    trainer = _trainer(model, recipe, 1, batches, tmp_path, steps.append, device="cpu")
    done = long_context.applied(model)  # the recipe's offloading reached the loader, which says the CPU needs none
    assert isinstance(trainer, StudioTrainer) and done.tiled_head and not done.offload
    assert any(n.startswith("train.offload_activations: not used, on the CPU") for n in done.notes)
    batch = {k: v[None] for k, v in batches[0].items()}
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    assert outputs.logits is None and float(loss.detach()) > 0
    trainer.train()
    assert steps == [1]


def test_models_lists_the_catalog(capsys):
    assert main(["models", "--json"]) == 0
    ids = [e["id"] for e in json.loads(capsys.readouterr().out)]
    assert "llama-3.1-70b-instruct" in ids and len(ids) >= 15


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibration_script_without_a_gpu(capsys):
    cal = _bench("calibrate_memory")
    assert cal.main([]) == 1
    assert "needs an NVIDIA GPU" in capsys.readouterr().out
    assert cal.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(cal.VOCABS) * len(cal.LENGTHS) * len(cal.ATTNS) * len(cal.GC)


def test_calibration_long_context_points_without_a_gpu(capsys):
    """--long-context: 8B at each length with the planner's choice for 24 GiB and with both parts forced on;
    the dry run prints each point's predictions (host memory and step time included) without a GPU."""
    from studio import planner

    cal = _bench("calibrate_memory")
    assert cal.main(["--long-context"]) == 1
    assert "needs an NVIDIA GPU" in capsys.readouterr().out
    points = cal.long_context_grid()
    assert cal.main(["--long-context", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(points) and all("host_pinned" in line and " s" in line for line in lines)
    by_length: dict[int, list[dict]] = {}
    for info, s, config in points:
        assert (info.name, info.layers, info.vocab, config["hidden_size"]) == ("llama-3.1-8b-instruct", 32, 128256, 4096)
        assert (s["quant.mode"], s["lora.rank"], s["train.micro_batch"], s["train.grad_accum"]) == ("4bit", 32, 1, 1)
        assert s["train.grad_ckpt"] and s["train.attn"] == "sdpa" and s["train.tiled_head"]
        by_length.setdefault(s["train.seq_len"], []).append(s)
    assert sorted(by_length) == list(cal.LONG_LENGTHS)
    for seq, chosen in by_length.items():
        plan = planner.fit(info, cal.LONG_BUDGET, fixed={**cal.LONG_FIXED, "train.seq_len": seq})
        assert plan.fits and chosen[0] == plan.settings.to_dict()
        assert chosen[-1]["train.tiled_mlp"] and chosen[-1]["train.offload_activations"]
        assert len(chosen) == (1 if chosen[0] == chosen[-1] else 2)
    assert not by_length[16384][0]["train.offload_activations"]  # the planner offloads only where a length needs it
    row = cal._row(info, by_length[65536][-1], None, cal.DRY_RUN_GPU)
    assert row["predicted"]["host_pinned"] > 16 * GiB and row["predicted"]["step_seconds"] > 0


def test_calibration_fit_recovers_known_coefficients():
    cal = _bench("calibrate_memory")
    rows = []
    for info, settings, _ in cal.grid(lengths=(512, 1024), vocabs=(32000, 151936)):
        row = cal._row(info, settings, None)
        c, p = row["components"], row["predicted"]
        act = sum(v for k, v in c.items() if k in ("activations", "recomputed_layer", "lora_activations",
                                                     "attention_scores"))
        alloc = p["peak_allocated"] + int(0.2 * act)  # reality: 20% more activation memory than counted
        reserved = int(alloc * 1.1)
        measured = {"peak_allocated": alloc, "peak_reserved": reserved, "device_used": reserved + 500 * 2**20 + 2**30,
                    "baseline_device_used": 2**30}
        row = cal._row(info, settings, measured)
        rows.append(row)
    fitted = cal.fit_coefficients(rows)
    assert fitted["ACT_SCALE"] == pytest.approx(1.2, abs=0.01)
    assert fitted["ALLOCATOR_OVERHEAD"] == pytest.approx(0.1, abs=0.001)
    assert fitted["CUDA_CONTEXT_MiB"] == 500


def test_accuracy_bench_meets_its_targets():
    acc = _bench("planner_accuracy")
    assert len(acc.ROWS) >= 12 and all(r["source"].startswith("https://") for r in acc.ROWS)
    assert acc.main() == 0
