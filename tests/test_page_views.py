"""What the pages show, computed without Qt (issue 34, item 4): the Plan page's view of a plan
(studio.planview), the Train page's texts and clock (studio.trainview), the Export page's result rows
(studio.exportview), the Playground's round of answers and texts (studio.playground), and the units."""
from __future__ import annotations

import pytest

from studio import exportview, hardware, kernels, models, planner, planview, playground, runs, trainview, units
from studio.planner import Suggestion
from studio.planning import Machine, budget_bytes, plan_for
from studio.recipe import Problem, Recipe
from studio.speed import TimeEstimate

GiB = 1024 ** 3


@pytest.fixture(scope="module")
def info():
    return models.resolve("llama-3.1-8b-instruct")


def _gpu(i: int, name: str = "NVIDIA GeForce RTX 3090") -> hardware.GpuInfo:
    return hardware.GpuInfo(index=i, name=name, total_bytes=24 * GiB, free_bytes=23 * GiB, used_bytes=GiB,
                            utilization=0, temperature=40, driver="550")


def test_a_plan_that_fits_shows_its_parts_verdict_and_no_suggestion(info):
    plan = planner.fit(info, 24 * GiB)
    view = planview.plan_view(plan, 24 * GiB)
    assert view.fits and view.change is None and view.change_label == ""
    assert view.total == pytest.approx(plan.predicted["device_total_bytes"])  # the bar adds up to the prediction
    assert [p[0] for p in view.parts][:len(plan.components)] == list(plan.components)
    assert view.verdict.startswith("<b style='color:#1A7F37'>Fits:</b>") and "of 24.00 GiB" in view.verdict
    assert view.footer == "Fits in 24.00 GiB" and view.reasons.startswith("<ul") and plan.reasons[0] in view.reasons


def test_a_plan_that_does_not_fit_offers_the_planners_change(info):
    plan = planner.fit(info, 12 * GiB, fixed={"train.seq_len": 65536})
    view = planview.plan_view(plan, 12 * GiB)
    assert not view.fits and view.footer == "Does not fit the budget"
    assert plan.suggestion in view.verdict and "Does not fit:" in view.verdict
    assert view.change.seq_len is not None and view.change_label == f"Use sequence length {view.change.seq_len}"


def test_the_cache_beyond_the_tensors_is_its_own_part(info):
    plan = planner.fit(info, 24 * GiB)
    tensors = sum(plan.components.values())
    plan.predicted["device_total_bytes"] = tensors + GiB
    name, size, source = planview.memory_parts(plan)[-1]
    assert name == planview.CACHE_PART[0] and size == GiB and "nvidia-smi" in source
    plan.predicted["device_total_bytes"] = tensors
    assert planview.memory_parts(plan)[-1][0] != planview.CACHE_PART[0]


def test_the_suggestion_button_says_what_it_will_do():
    assert planview.change_label(Suggestion(unfix=("quant.mode",))) == "Release the fixed settings"
    assert planview.change_label(Suggestion(budget_bytes=40 * GiB, model="smaller")) == "Set the budget to 40.00 GiB"
    assert planview.change_label(Suggestion()) == "" and planview.change_label(None) == ""


def test_speed_text_on_the_cpu_says_it_measures_or_failed(info):
    plan = planner.fit(info, 24 * GiB)
    plan.estimate, plan.device = None, "cpu"
    assert "measuring this CPU" in planview.speed_text(plan)
    assert planview.speed_text(plan, probe_failed=True).startswith("Speed unknown")
    plan.device = "cuda"
    assert planview.speed_text(plan) == ""
    plan.estimate = TimeEstimate(device="cuda", tokens_per_s=1234.5, step_seconds=2.25, seconds=90, steps=40, basis="")
    text = planview.speed_text(plan)
    assert text.startswith("Expected speed: about 1,234 tokens/s, 2.2 s per step; the run about") and "(40 steps)" in text


def test_fitted_rows_mark_what_the_user_fixed():
    r = Recipe()
    rows = planview.fitted_rows(r, {"train.seq_len": r.train.seq_len})
    assert [key for _, key in planview.FITTED_ROWS] == list(rows)
    assert rows["train.seq_len"] == f"{r.train.seq_len} tokens  (fixed)" and "(fixed)" not in rows["train.lr"]
    assert rows["lora.method"] == "LoRA"


def test_the_long_context_card_says_the_longest_length_and_what_runs(info):
    """Issue 30: 80,000 tokens of Llama-3.1-8B on 24 GiB fit with the tiled MLP and offloading; the card says so."""
    plan = plan_for(info, Machine("cuda", (24 * GiB,), "NVIDIA GeForce RTX 3090", 64 * GiB), {"train.seq_len": 80000},
                    speed=False)
    view = planview.plan_view(plan, 24 * GiB, fixed={"train.seq_len": 80000})
    assert plan.fits and 80000 <= plan.longest_seq_len < planner.MAX_CONTEXT
    assert view.longest == f"Longest context on this card with these settings: {plan.longest_seq_len:,} tokens."
    rows = dict(view.context)
    assert list(rows) == ["Tiled loss head", "Tiled MLP", "Activation offloading", "Kernels"]
    assert rows["Tiled loss head"].startswith("on: ") and rows["Tiled MLP"].startswith("on: each layer's MLP runs 4,096")
    host = units.binary_bytes(plan.host_offload)
    assert rows["Activation offloading"] == (f"on: the saved layer inputs take {host} of host RAM, of the 64.00 GiB "
                                             "this computer can spare")
    assert rows["Kernels"] == planview.kernels_text(plan.settings.kernels, "cuda")
    plan.host_budget = None  # planning for a GPU that is not here: the RAM is not checked, and the card says so
    assert planview.offload_text(plan).endswith("the machine that trains needs that much free")


def test_the_longest_line_says_which_parts_its_figure_turns_on(info):
    plan = planner.fit(info, 24 * GiB)  # the default length: neither costly part is on
    assert not plan.settings.tiled_mlp and not plan.settings.offload and plan.settings.grad_ckpt
    assert planview.longest_text(plan, {}).endswith(
        " tokens (with the tiled MLP and activation offloading turned on where a length needs them).")
    pinned = {"train.offload_activations": False}
    assert planview.longest_text(plan, pinned).endswith(" tokens (with the tiled MLP turned on where a length needs it).")
    plan.device = "cpu"  # offloading is for GPUs; the CPU's budget is its memory
    assert planview.longest_text(plan, {}).startswith("Longest context in this memory budget with these settings: ")
    assert planview.offload_text(plan) == "off (GPU only)"
    plan.longest_seq_len = None  # a plan that does not fit, or one of several GPUs, has no figure
    assert planview.longest_text(plan, {}) == "" and planview.longest_context(plan) == (None, "this memory budget")
    assert planview.longest_context(None) == (None, "")


def test_the_kernels_in_words(info, monkeypatch):
    assert planview.kernels_text("liger", "cuda") == "liger-kernel's fused RMSNorm, RoPE and SwiGLU"
    assert planview.kernels_text("torch", "cpu") == "torch's kernels (liger-kernel runs on NVIDIA GPUs only)"
    monkeypatch.setattr(kernels, "liger_installed", lambda: False)
    assert planview.kernels_text("torch", "cuda").endswith("is not installed)")
    monkeypatch.setattr(kernels, "liger_installed", lambda: True)
    assert planview.kernels_text("torch", "cuda") == "torch's kernels"
    plan = planner.fit(info, 80 * GiB, fixed={"train.tiled_head": False, "train.seq_len": 4096})
    head = dict(planview.context_rows(plan))["Tiled loss head"]
    assert head.startswith("off: the loss comes from the full tokens × vocabulary logits (") and "GiB)" in head


def test_budget_rule_and_gpu_lines():
    assert budget_bytes([_gpu(0)]) == 24 * GiB  # the window's start: the one budget rule (studio.planning)
    assert budget_bytes([]) == hardware.cpu_budget_bytes()
    assert planview.gpus_text([_gpu(0)], "", 0).startswith("NVIDIA GeForce RTX 3090: 24.00 GiB total")
    assert planview.gpus_text([], "no driver", 8 * GiB).startswith("No NVIDIA GPU detected (no driver)")
    assert planview.no_picker_reason([_gpu(0), _gpu(1)], windows=False) == ""
    assert "NCCL" in planview.no_picker_reason([_gpu(0), _gpu(1)], windows=True)
    assert "this machine has one GPU" in planview.no_picker_reason([_gpu(0)], windows=False)
    assert planview.several_gpus_note(None, 2) == "" and planview.several_gpus_note(None, 1) == ""


def test_train_texts():
    assert trainview.error_title("oom") == "Out of GPU memory" and trainview.error_title("?") == "The run failed"
    line = trainview.metric_status({"step": 3, "loss": 0.5, "rewards/margins": 1.2, "tokens_per_s": 900}, 1000.0, "")
    assert line == "step 3 · loss 0.5000 · margin 1.200 · 900 tokens/s (planned ≈ 1,000, 90%)"
    assert trainview.metric_status({"step": 3}, None, "as before") == "as before"
    assert trainview.phase_text("sample-after", 3, 20, 42.0) == "sample-after: 3/20 · left ≈ 0:42"
    assert trainview.phase_text("merge", 0, 0, None) == "merge"
    head, hint = trainview.problems_message([Problem("data.path", "no dataset chosen", "choose one on the Data page")])
    assert head == "Cannot start yet: data.path: no dataset chosen" and hint == "Choose one on the Data page."


def test_the_clock_measures_the_pace_from_the_events_own_times():
    clock = trainview.RunClock(started=0.0)
    clock.event("hello", {}, 1000.0)
    assert clock.eta_text(100) is None  # no pace yet
    for ts, done in ((1010.0, 10), (1020.0, 20)):
        clock.event("progress", {"phase": "train"}, ts)
        clock.step(done)
    assert clock.eta_text(100, now=1020.0) == "elapsed 0:20 · left ≈ 1:20"
    assert clock.seconds() == 20.0


def test_the_run_files_the_train_page_reads(tmp_path):
    run_dir = runs.create(Recipe(), tmp_path, plan={"estimate": {"tokens_per_s": 1234.0}})
    assert trainview.expected_tokens_per_s(run_dir) == 1234.0
    (run_dir / runs.PLAN).write_text("[1, 2", encoding="utf-8")  # damaged: no figure, no exception
    assert trainview.expected_tokens_per_s(run_dir) is None and runs.read_plan(run_dir) == {}
    assert not trainview.can_resume(run_dir) and not trainview.can_resume(None)
    (run_dir / runs.CHECKPOINTS / "step-2").mkdir(parents=True)
    assert trainview.can_resume(run_dir)
    assert trainview.ending(True, True, 0, "finished", run_dir)[0] == "failed"
    assert trainview.ending(False, True, 0, "finished", run_dir) == ("finished", f"Finished: {run_dir.name}")
    assert trainview.ending(False, False, 1, None, run_dir) == ("stopped", "Stopped (exit code 1).")


def test_export_result_rows_and_the_runs_that_can_be_exported(tmp_path, monkeypatch):
    done = {"format": "ollama", "quant": "q4_k_m", "source": {"run_id": "run1", "step": 12},
            "files": [{"name": "model.gguf", "bytes": 105_400_000, "kind": "merged model (GGUF)", "quant": "q4_k_m"},
                      {"name": "Modelfile", "bytes": 410, "kind": "Ollama Modelfile"}]}
    assert exportview.result_heading(done) == "ollama (q4_k_m) from run run1, step 12"
    assert exportview.result_heading({"format": "adapter"}) == "adapter"
    assert exportview.result_files(done) == [("model.gguf", "105.4 MB", "merged model (GGUF), q4_k_m"),
                                             ("Modelfile", "410 B", "Ollama Modelfile")]
    with_adapter, _without = runs.create(Recipe()), runs.create(Recipe())
    (with_adapter / runs.ADAPTER).mkdir()
    listed = exportview.exportable_runs()
    assert [path for _, path in listed] == [with_adapter] and "(created, last loss –)" in listed[0][0]


def test_a_round_asks_a_then_b_and_keeps_their_answers():
    r = playground.Round()
    r.ask("2+2?", ["a", "b"])
    assert r.busy and not r.complete
    gid, pane = r.take()
    assert pane == "a" and r.pane_of(gid) == "a" and r.pane_of("other") is None
    r.answered("4")
    gid_b, pane = r.take()
    assert pane == "b" and gid_b != gid and r.pane_of(gid) is None
    r.answered("four")
    assert r.take() is None and not r.busy and r.complete and r.answers == {"a": "4", "b": "four"}
    r.ask("again", ["a", "b"])
    r.take()
    r.end()
    assert not r.busy and r.answers == {}


def test_playground_texts_and_sources(tmp_path):
    assert playground.loaded_text({"device": "cuda", "quant": "4bit"}) == "Loaded on cuda (4-bit weights). Ask something."
    assert playground.answer_stats({"tokens": 5, "time_to_first_token_s": 0.2, "tokens_per_s": 30, "stopped": True}) \
        == "5 tokens · first token 0.2 s · 30 tokens/s · stopped"
    assert playground.answer_stats({}) == "0 tokens · first token – s · – tokens/s"
    assert playground.pane_record(None, []) == {"variant": "", "adapter": None, "messages": []}
    assert playground.sources("demo") == [("demo  (base model only)", ("model", "demo"))]
    [base] = playground.variants("model", "demo")
    assert base.adapter is None and base.model == "demo"


def test_playground_knows_without_torch_which_variants_take_images(tmp_path):
    """A base with a vision_config and a processor file takes images (the worker then loads the whole VLM); an
    adapter trained on image rows does too, one trained on the language model alone (text rows) does not."""
    import json

    from studio import chat_client
    from studio.recipe import Recipe

    vlm = tmp_path / "vlm"
    vlm.mkdir()
    (vlm / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "vision_config": {"depth": 1}}))
    (vlm / "preprocessor_config.json").write_text("{}")
    text = tmp_path / "text"
    text.mkdir()
    (text / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert playground.base_folder("model", str(vlm)) == vlm and playground.base_folder("model", "demo") is None
    base = chat_client.Variant(chat_client.BASE, None, str(vlm), None)
    assert playground.takes_images("model", str(vlm), [base])
    assert not playground.takes_images("model", str(text), [base])
    recipe = Recipe(name="v")
    recipe.model.name_or_path = str(vlm)
    run = runs.create(recipe, tmp_path / "runs")
    assert playground.base_folder("run", run) == vlm
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"target_modules": ["q_proj", "v_proj"]}))
    tuned = chat_client.Variant("run", run, str(vlm), adapter)
    assert not playground.takes_images("run", run, [base, tuned])  # trained on text rows: it loads for text
    (adapter / "adapter_config.json").write_text(json.dumps({"target_modules": "^(?:model\\.language_model\\.x)$"}))
    assert playground.takes_images("run", run, [base, tuned])
    assert playground.image_files(["a.PNG", "b.txt", "c.webp"]) == (["a.PNG", "c.webp"], ["b.txt"])
    assert "text reads text only" in playground.text_only_message(str(text))
    vote = playground.add_vote(run, "b", "base", "run", "<image>What colour?", {"a": "x", "b": "y"}, ["/p/red.png"])
    assert vote["images"] == ["/p/red.png"] and playground.votes(run)[-1]["images"] == ["/p/red.png"]
    assert "images" not in playground.add_vote(run, "a", "base", "run", "Hi", {"a": "x", "b": "y"})
    r = playground.Round()
    r.ask("What colour?", ["a", "b"], ["/p/red.png"])
    assert r.images == ["/p/red.png"]
    assert chat_client.image_message("What colour?", ["/p/red.png"]) == {
        "role": "user", "content": "<image>What colour?", "images": ["/p/red.png"]}


def test_units():
    assert units.binary_bytes(None) == "–" and units.binary_bytes(1536) == "2 KiB" and units.binary_bytes(3 * GiB) == "3.00 GiB"
    assert units.decimal_bytes(999) == "999 B" and units.decimal_bytes(1_500_000_000) == "1.5 GB"
    assert units.clock(59) == "0:59" and units.clock(3700) == "1:01:40" and units.clock(-5) == "0:00"
    assert units.number("1.5") == 1.5 and units.number(float("nan")) is None and units.number("x") is None
