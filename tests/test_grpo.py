"""grpo: the reward presets, their mix, the user's reward file, the prompts, and the real worker on a tiny model."""
import json
import math
import time
from pathlib import Path

import pytest
import regex
from test_train_worker import run_worker, stdout_events, tiny_recipe
from tiny import write_grpo_jsonl

from studio import rewards, runs
from studio.data import DataError, load_examples
from studio.recipe import Recipe
from studio.scoring import FORMAT_REGEX

CARD = "Answer: Rome is the capital.\nKey points:\n- It is in Lazio.\n- It is old.\nConfidence: high"


@pytest.fixture(scope="module")
def grpo_jsonl(tmp_path_factory) -> Path:
    return write_grpo_jsonl(tmp_path_factory.mktemp("grpo") / "grpo.jsonl")


# -- presets ----------------------------------------------------------------------------------------------
def test_the_pattern_reward_is_one_for_a_match_and_grades_how_far_a_miss_got():
    rx = regex.compile(FORMAT_REGEX)
    texts = [CARD, "<think>the user wants a card</think>\n" + CARD,
             "Answer: Rome.\nKey points:\n- one\nThen I wander off for a while",
             "Answer: Rome.\n", "Answer: Rome is a city that " + "goes on " * 30, "Rome is the capital of Italy."]
    progress = [rewards.pattern_progress(t, rx) for t in texts]
    assert [p.matched for p in progress] == [True, True, False, False, False, False]
    assert progress[2].lines == len("Answer: Rome.\nKey points:\n- one\n") and progress[5].viable == 0
    assert progress[4].viable == len(texts[4].strip()) and progress[4].lines == 0  # viable, but not one whole line
    full, thought, half, stopped, rambling, prose = rewards.pattern_rewards(progress)
    assert full == thought == 1.0 and prose == rambling == 0.0
    assert 0.0 < stopped < half < 0.5  # stopping after a correct start earns less than writing more of the card
    assert stopped == 0.5 * len("Answer: Rome.\n") / len(CARD)  # measured against the furthest: the whole card
    alone = rewards.pattern_rewards([rewards.pattern_progress("Answer: Rome.\nKey", rx)])
    assert alone == [0.5 * len("Answer: Rome.\n") / len("Answer: Rome.\nKey")]  # nothing better to compare with


def test_a_completion_cut_at_the_length_limit_earns_less_partial_credit():
    fn = rewards.Rewards(rewards.RewardSettings([("pattern", 1.0)], pattern=FORMAT_REGEX, completion_len=5)).functions()[0]
    start = "Answer: Rome.\nKey points:\n- one\n"
    got = fn(completions=[start, start, CARD], completion_ids=[[0] * 5, [0] * 3, [0] * 5])
    assert 0.0 < got[0] < got[1] < 0.5 and got[2] == 1.0  # cut: half the lines of the same start finished early


def test_a_pattern_that_backtracks_for_ever_scores_zero_in_bounded_time():
    evil = regex.compile(r"\A(a|a)*\Z")
    t0 = time.monotonic()
    found = rewards.pattern_progress("a" * 40 + "b", evil)
    assert found.timed_out and rewards.pattern_rewards([found]) == [0.0]
    assert time.monotonic() - t0 < 30  # each match is cut at MATCH_TIMEOUT_S


def test_the_answer_reward_finds_the_final_answer_exact_contained_or_numeric():
    assert rewards.answer_reward("<think>maybe 12?</think>The answer is \\boxed{14}", "14", "exact", 0) == 1.0
    assert rewards.answer_reward("<think>it is 14</think> it is 12", "14", "contains", 0) == 0.0  # thinking ignored
    assert rewards.answer_reward("Working...\nFinal answer: 1,000.0004", "1000", "numeric", 1e-6) == 1.0
    assert rewards.answer_reward("Answer: 1001", "1000", "numeric", 1e-6) == 0.0
    assert rewards.answer_reward("Answer: Paris.", "paris", "exact", 0) == 1.0
    assert rewards.answer_reward("no number", "3", "numeric", 0.1) == 0.0


def test_the_json_reward_checks_the_value_and_a_schema(tmp_path):
    assert rewards.json_reward('```json\n{"a": 1}\n```', None) == 1.0
    assert rewards.json_reward('{"a": 1', None) == 0.0
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}))
    validator = rewards.load_schema(schema)
    assert rewards.json_reward('{"name": "x"}', validator) == 1.0
    assert rewards.json_reward('{"name": 3}', validator) == 0.5
    schema.write_text(json.dumps({"type": "object", "properties": {"s": {"type": "string", "pattern": r"\A(a|a)*\Z"}},
                                  "patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False}))
    validator = rewards.load_schema(schema)
    t0 = time.monotonic()
    assert rewards.json_reward(json.dumps({"s": "a" * 40 + "b"}), validator) == 0.5  # timed out: not valid
    assert time.monotonic() - t0 < 30
    assert rewards.json_reward('{"s": "aa", "x1": 3}', validator) == 1.0
    assert rewards.json_reward('{"s": "aa", "x1": "3"}', validator) == 0.5
    assert rewards.json_reward('{"s": "aa", "y": 3}', validator) == 0.5
    schema.write_text(json.dumps({"properties": {"a": {"$ref": "#/$defs/missing"}}}))
    with pytest.raises(rewards.RewardError, match="cannot be resolved"):  # not a crash at the first completion
        rewards.load_schema(schema)
    schema.write_text(json.dumps({"type": "no-such-type"}))
    with pytest.raises(rewards.RewardError, match="not a valid JSON Schema"):
        rewards.load_schema(schema)


def test_the_length_reward_is_a_band_with_sloped_sides():
    assert rewards.length_reward(50, 20, 100) == 1.0
    assert rewards.length_reward(10, 20, 100) == 0.5
    assert rewards.length_reward(150, 20, 100) == 0.5 and rewards.length_reward(400, 20, 100) == 0.0


def test_the_mix_names_presets_and_weights_and_refuses_what_cannot_work():
    assert rewards.parse_mix("pattern") == [("pattern", 1.0)]
    assert rewards.parse_mix(" answer:2, length:0.25 ") == [("answer", 2.0), ("length", 0.25)]
    for bad, words in (("pattren", "unknown reward"), ("answer:x", "not a number"), ("answer,answer", "twice"),
                       ("answer:0", "every weight is 0"), ("", "empty"), ("length:nan", "between 0 and 100")):
        with pytest.raises(rewards.RewardError, match=words):
            rewards.parse_mix(bad)


def test_grpo_settings_are_validated_with_fixes():
    r = Recipe()
    r.model.name_or_path, r.data.path = "demo", "x.jsonl"
    r.train.objective, r.train.micro_batch, r.train.grad_accum, r.train.grpo_generations = "grpo", 3, 1, 4
    r.train.grpo_rewards = "file,bogus"
    problems = {p.field: str(p) for p in r.validate()}
    assert "multiple of 4" in problems["train.grad_accum"] and "bogus" in problems["train.grpo_rewards"]
    r.train.micro_batch, r.train.grpo_rewards, r.train.grpo_completion_len = 4, "file", 2000
    r.train.grpo_pattern, r.train.nproc, r.train.packing = "(unclosed", 2, True
    problems = {p.field: str(p) for p in r.validate()}
    assert "--reward-file" in problems["train.grpo_reward_file"] and "train.grpo_completion_len" in problems
    assert "not a valid regular expression" in problems["train.grpo_pattern"] and "one process" in problems["train.nproc"]
    assert "train.packing" in problems  # every problem at once, packing's too


# -- the user's reward file -------------------------------------------------------------------------------
def _reward_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_reward.py"
    path.write_text(body, encoding="utf-8")
    return path


def test_a_reward_file_runs_only_for_the_bytes_agreed_to(tmp_path):
    path = _reward_file(tmp_path, "def reward(prompt, completion, **row):\n    return len(completion) / 10\n")
    with pytest.raises(rewards.RewardError, match="runs only after you agree"):
        rewards.load_user_reward(path, "")
    digest = rewards.file_sha256(path)
    with pytest.raises(rewards.RewardError, match="a recipe that names the file is not enough"):
        rewards.load_user_reward(path, digest)  # a recipe carrying the right sha256 is not this user's yes
    rewards.agree(path, digest)
    fn, sha = rewards.load_user_reward(path, digest)
    assert sha == digest and fn("q", "abc") == 0.3
    path.write_text("def reward(prompt, completion, **row):\n    return 1.0\n", encoding="utf-8")
    with pytest.raises(rewards.RewardError, match="changed since you agreed"):
        rewards.load_user_reward(path, digest)


def test_a_reward_that_raises_or_returns_nan_names_the_file_line_and_row(tmp_path):
    path = _reward_file(tmp_path, "import math\n\ndef reward(prompt, completion, **row):\n"
                                  "    if row['answer'] == '3':\n        return math.nan\n"
                                  "    return 1 / int(row['answer'])\n")
    rewards.agree(path, rewards.file_sha256(path))
    s = rewards.RewardSettings([("file", 1.0)], reward_file=str(path), reward_sha256=rewards.file_sha256(path))
    built = rewards.Rewards(s)
    fn = built.functions()[0]
    assert fn.__name__ == "file"
    ok = fn(completions=[[{"role": "assistant", "content": "x"}]], completion_ids=[[1]], prompts=[[]],
            studio_row=[json.dumps({"answer": "4"})], studio_where=["line 1"])
    assert ok == [0.25]
    with pytest.raises(rewards.RewardFault) as err:
        fn(completions=["x"], studio_row=[json.dumps({"answer": "0"})], studio_where=["line 7"])
    assert f"{path}:6" in str(err.value) and "ZeroDivisionError" in str(err.value) and "line 7" in str(err.value)
    with pytest.raises(rewards.RewardFault, match="nan for dataset line 9, not a finite number"):
        fn(completions=["x"], studio_row=[json.dumps({"answer": "3"})], studio_where=["line 9"])


# -- prompts ----------------------------------------------------------------------------------------------
def test_prompt_rows_are_their_own_format_and_keep_their_columns_for_the_rewards(grpo_jsonl, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from studio.train.dataset import build

    examples, report = load_examples(str(grpo_jsonl), keep_row=True)
    assert report.format == "prompts" and examples[0]["messages"][-1]["role"] == "user"
    assert examples[0]["_row"]["answer"] == "0"
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    r = Recipe()
    r.data.path, r.train.seq_len, r.train.objective = str(grpo_jsonl), 64, "sft"
    with pytest.raises(DataError, match="prompts alone.*--objective grpo"):
        build(tok, r)
    r.train.objective, r.train.grpo_completion_len, r.train.grpo_rewards = "grpo", 16, "answer"
    data = build(tok, r)
    assert data.prompts == len(data.train) > 20 and set(data.train.column_names) == {"prompt", "studio_row",
                                                                                     "studio_where"}
    assert json.loads(data.train[0]["studio_row"])["answer"] and data.train[0]["studio_where"].startswith("line ")
    assert not any("not used" in n for n in data.report.notes)


def test_the_prompts_format_keeps_an_instructions_input_and_leaves_text_rows_alone(tmp_path):
    rows = tmp_path / "instr.jsonl"
    rows.write_text(json.dumps({"instruction": "Sum them.", "input": "2 and 3", "answer": "5"}) + "\n")
    examples, report = load_examples(str(rows))
    assert report.format == "prompts" and examples[0]["messages"] == [{"role": "user", "content": "Sum them.\n\n2 and 3"}]
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"query": "q", "passage": "a long passage"}) + "\n")
    assert load_examples(str(text))[1].format != "prompts"  # a passage is text to learn, not a prompt alone


def test_rows_the_rewards_cannot_score_are_left_out_and_said(tmp_path, tiny_tokenizer_dir, chat_jsonl):
    from transformers import AutoTokenizer

    from studio.train.dataset import build

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    r = Recipe()
    r.data.path, r.train.seq_len, r.train.objective, r.train.grpo_completion_len = str(chat_jsonl), 64, "grpo", 16
    with pytest.raises(DataError, match="no 'pattern' column"):  # chat rows, the default pattern reward
        build(tok, r)
    r.train.grpo_pattern = r"ANSWER: \d+"  # a pattern for every row: the user turns become the prompts
    data = build(tok, r)
    assert data.prompts and all(p["prompt"][-1]["role"] == "user" for p in data.train)
    rows = [json.dumps({"prompt": f"q{i}", **({"answer": "1"} if i % 2 else {})}) for i in range(10)]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(rows) + "\n")
    r.data.path, r.train.grpo_rewards, r.data.val_fraction = str(mixed), "answer", 0.0
    data = build(tok, r)
    assert data.prompts == 5 and any("5 row(s) left out of grpo: no 'answer' column" in n for n in data.report.notes)
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": "1"}) + "\n" for i in range(3)))
    r.data.path, r.train.micro_batch, r.train.grad_accum, r.train.grpo_generations = str(few), 4, 4, 4
    with pytest.raises(DataError, match="3 prompt\\(s\\) for grpo, and one step takes 4"):
        build(tok, r)  # TRL's sampler would give a run of no steps
    r.train.grad_accum = 2
    assert any("leaves out the last 1 of 3" in n for n in build(tok, r).report.notes)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "pattern": "(unclosed"}) + "\n")
    r.data.path, r.train.grpo_rewards = str(bad), "pattern"
    with pytest.raises(DataError, match="line 1.*not a valid regular expression"):
        build(tok, r)


# -- the planner --------------------------------------------------------------------------------------
def test_the_planner_counts_sampling_and_keeps_whole_groups():
    from studio import memory, models, planner

    info = models.resolve("demo")
    base = {"quant.mode": "4bit", "lora.rank": 16, "train.micro_batch": 1, "train.grad_accum": 64,
            "train.seq_len": 4096, "train.grad_ckpt": True, "train.objective": "grpo"}
    est = memory.estimate(info, base)  # trains one sequence at a time, samples all 64 at once: sampling is the peak
    assert "sampling_kv_cache" in est.components and "grpo samples 64 completions" in est.sources["sampling_kv_cache"]
    assert est.components["sampling_kv_cache"] == 64 * 4096 * 2 * info.layers * info.kv_dim * 2
    assert "activations" not in est.components  # a phase of its own, not added to training's
    training = memory.estimate(info, {**base, "train.grad_accum": 1})
    assert "sampling_kv_cache" not in training.components and "reference_forward" in training.components
    assert "reference_forward" not in memory.estimate(info, {**base, "train.grpo_beta": 0.0,
                                                            "train.grad_accum": 1}).components
    plan = planner.fit(info, 24 * 2**30, fixed={"train.objective": "grpo", "train.grpo_generations": 6})
    assert plan.settings.micro_batch * plan.settings.grad_accum % 6 == 0
    assert any("Objective grpo" in r for r in plan.reasons)


def test_the_planner_aims_at_prompt_plus_completion_and_counts_steps_in_prompts():
    from studio import models, planner

    info = models.resolve("demo")
    report = {"usable": 400, "tokens": {"p95": 150, "mean": 120}}
    fixed = {"train.objective": "grpo", "train.grpo_completion_len": 96, "train.grpo_generations": 4}
    plan = planner.fit(info, 24 * 2**30, dataset_report=report, fixed=fixed)
    assert plan.settings.seq_len >= 150 + 96 and any("grpo samples completions of up to 96" in r for r in plan.reasons)
    sft = planner.fit(info, 24 * 2**30, dataset_report=report)
    assert sft.settings.seq_len < plan.settings.seq_len
    planner.add_time_estimate(plan, info, examples=400, epochs=1.0, dataset_report=report)
    prompts = plan.settings.micro_batch * plan.settings.grad_accum // 4
    assert plan.estimate.steps == -(-400 // prompts)  # a step takes prompts, not completions


def test_the_time_estimate_counts_sampling_on_the_cpu():
    from studio import models, speed

    info = models.resolve("demo")
    rates = {"flops_per_s": 1e11, "seconds_per_layer_pass": 0.01}
    s = {"quant.mode": "4bit", "lora.rank": 16, "lora.alpha": 32, "lora.targets": ["all-linear"],
         "train.micro_batch": 4, "train.grad_accum": 2, "train.seq_len": 320, "train.grad_ckpt": False,
         "train.attn": "sdpa", "train.optimizer": "adamw_torch", "train.objective": "grpo",
         "train.grpo_completion_len": 80, "train.tiled_head": False}  # both objectives build the full logits
    sampling = speed.sampling_seconds(info, s, "cpu", rates, 320)
    assert sampling > 80 * info.layers * 0.01  # 80 decode steps, each a pass through every layer at least
    sft = speed.estimate(info, {**s, "train.objective": None}, "cpu", rates=rates)
    grpo = speed.estimate(info, s, "cpu", rates=rates)
    assert math.isclose(grpo.step_seconds, sft.step_seconds + sampling) and "sampling 8 completions" in grpo.basis


# -- the real worker ----------------------------------------------------------------------------------------
def _series(events, key):
    return [e.data[key] for e in events if e.type == "metric" and key in e.data]


def test_grpo_trains_with_rewards_and_reports_them(tiny_model_dir, grpo_jsonl, tmp_path):
    recipe = tiny_recipe(tiny_model_dir, grpo_jsonl, max_steps=2, objective="grpo", micro_batch=4, grad_accum=2,
                         grpo_completion_len=12, grpo_rewards="pattern:1,answer:1,length:0.2", save_steps=1)
    run_dir = runs.create(recipe, tmp_path)  # 4-bit QLoRA base, like the default recipe
    proc = run_worker(run_dir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    events = stdout_events(proc)
    assert len(_series(events, "reward")) == 2 and len(_series(events, "kl")) == 2
    assert all(0.0 <= r <= 2.2 for r in _series(events, "reward"))
    assert _series(events, "rewards/length/mean") and _series(events, "completions/clipped_ratio")
    samples = _series(events, "samples")[-1]
    assert 1 <= len(samples) <= 3 and {"prompt", "completion", "reward", "rewards"} <= set(samples[0])
    assert samples[0]["prompt"].startswith("What is") and set(samples[0]["rewards"]) == {"pattern", "answer", "length"}
    log = " ".join(e.data.get("message", "") for e in events if e.type == "log")
    assert "grpo: 29 prompts; each optimizer step samples 4 completions" in log
    assert (run_dir / runs.ADAPTER / "adapter_model.safetensors").is_file()
    heldout = json.loads((run_dir / "eval.json").read_text())["heldout"]
    assert heldout["scored"] and heldout["scored_rows"] == heldout["total"] > 0  # the rows' own patterns score them
    adapter_keys = json.loads((run_dir / runs.ADAPTER / "adapter_config.json").read_text())
    assert adapter_keys["peft_type"] == "LORA"
    assert [c.name for c in (run_dir / runs.CHECKPOINTS).iterdir()] and not list(
        (run_dir / runs.ADAPTER).glob("ref"))  # no copy of the adapter as a "ref" one


def test_a_reward_file_that_raises_stops_the_run_naming_file_line_and_row(tiny_model_dir, grpo_jsonl, tmp_path):
    path = _reward_file(tmp_path, "def reward(prompt, completion, **row):\n"
                                  "    raise ValueError('no score for ' + row['answer'])\n")
    recipe = tiny_recipe(tiny_model_dir, grpo_jsonl, max_steps=2, objective="grpo", micro_batch=4,
                         grpo_completion_len=8, grpo_rewards="file", grpo_reward_file=str(path),
                         grpo_reward_sha256=rewards.file_sha256(path))
    recipe.quant.mode = "none"
    run_dir = runs.create(recipe, tmp_path / "runs")
    rewards.agree(path, rewards.file_sha256(path))  # the worker shares this test's data folder
    proc = run_worker(run_dir)
    assert proc.returncode == 1
    events = stdout_events(proc)
    err = next(e.data for e in events if e.type == "error")
    assert err["kind"] == "config" and f"{path}:2" in err["message"] and "ValueError: no score for" in err["message"]
    assert "(dataset line " in err["message"] and str(path) in err["hint"]
    assert runs.read_state(run_dir)["reward_file"]["sha256"] == rewards.file_sha256(path)
    from studio import registry

    assert registry.build_metadata(run_dir)["reward_file"] == {"path": str(path), "sha256": rewards.file_sha256(path)}
    warned = [e.data["message"] for e in events if e.type == "warning"]
    assert any("running your reward function" in w for w in warned)


def test_the_oom_ladder_samples_fewer_completions_before_anything_else():
    from studio.train.recovery import next_change

    r = Recipe()
    r.train.objective, r.train.micro_batch, r.train.grad_accum, r.train.grpo_generations = "grpo", 4, 4, 4
    first = next_change(r, None, "cpu")
    assert "completions sampled per step 16 -> 8 (2 prompt(s) x 4)" in first.words
    assert (r.train.micro_batch, r.train.grad_accum) == (4, 2)
    next_change(r, None, "cpu")
    assert r.train.micro_batch * r.train.grad_accum == 4  # one prompt's group: the whole groups stay
    assert "micro-batch 4 -> 2" in next_change(r, None, "cpu").words


# -- the command line ---------------------------------------------------------------------------------------
def _train_args(*argv: str):
    import argparse

    from studio.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    return train, parser.parse_args(["train", *argv])


def test_the_cli_runs_a_reward_file_only_after_a_yes(tmp_path, monkeypatch, capsys):
    from studio.errors import UserError

    path = _reward_file(tmp_path, "def reward(prompt, completion, **row):\n    return 1.0\n")
    train, args = _train_args("--demo", "--objective", "grpo", "--reward-file", str(path))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UserError, match="--trust-reward-file"):
        train._recipe_from(args)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(UserError, match="nothing was started"):
        train._recipe_from(args)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    recipe = train._recipe_from(args)
    asked = capsys.readouterr().err
    assert rewards.file_sha256(path) in asked and "with your rights" in asked
    assert recipe.train.grpo_rewards == "file" and recipe.train.grpo_reward_sha256 == rewards.file_sha256(path)
    assert recipe.data.path.endswith("grpo.jsonl") and recipe.validate() == []  # the grpo demo, the user's reward
    _, args = _train_args("--demo", "--objective", "grpo", "--reward-file", str(path), "--trust-reward-file",
                          "--rewards", "pattern:1,file:0.5")
    recipe = train._recipe_from(args)
    assert recipe.train.grpo_rewards == "pattern:1,file:0.5" and recipe.train.grpo_reward_sha256
    _, args = _train_args("--demo", "--reward-file", str(path), "--trust-reward-file")
    with pytest.raises(UserError, match="add --objective grpo"):
        train._recipe_from(args)
    r = train._recipe_from(_train_args("--demo", "--objective", "grpo", "--reward-file", str(path))[1])
    assert r.train.grpo_reward_sha256 == rewards.file_sha256(path)  # agreed before on this computer: not asked again
    path.write_text("def reward(prompt, completion, **row):\n    return 0.0\n", encoding="utf-8")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(UserError, match="nothing was started"):  # changed bytes: asked again
        train._recipe_from(_train_args("--demo", "--objective", "grpo", "--reward-file", str(path))[1])


def test_the_grpo_demo_prompts_show_one_card_and_hold_no_held_out_question():
    from studio.demo import DEMO_GRPO, DEMO_GRPO_HELDOUT
    from studio.paths import resources_dir
    from studio.scoring import FORMAT_PATTERN, load_prompts

    # the files are build.py's (tests/test_demo_dataset.py checks that)
    rows = [json.loads(line) for line in (resources_dir() / DEMO_GRPO).read_text(encoding="utf-8").splitlines()]
    assert len(rows) > 300
    assert all(FORMAT_PATTERN.search(r["prompt"][2]["content"]) and r["prompt"][-1]["role"] == "user" for r in rows)
    held = load_prompts(resources_dir() / DEMO_GRPO_HELDOUT)
    asked = {r["prompt"][-1]["content"] for r in rows}
    assert len(held) == 20 and not asked & {h["messages"][-1]["content"] for h in held}
    examples, report = load_examples(str(resources_dir() / DEMO_GRPO), keep_row=True)
    assert report.format == "prompts" and len(examples) == len(rows)


def test_queue_and_sweep_recipes_with_a_reward_file_are_asked_about_not_a_crash(tmp_path, monkeypatch):
    """queue add and sweep build their own arguments (no --trust-reward-file): the same question, or its refusal."""
    import argparse

    from studio.commands import train
    from studio.errors import UserError

    path = _reward_file(tmp_path, "def reward(prompt, completion, **row):\n    return 1.0\n")
    r = Recipe()
    r.model.name_or_path, r.data.path, r.train.objective = "demo", "x.jsonl", "grpo"
    r.train.grpo_rewards, r.train.grpo_reward_file = "file", str(path)
    r.train.grpo_reward_sha256 = rewards.file_sha256(path)  # a shared recipe that carries the hash: not a yes
    r.save(tmp_path / "shared.json")
    args = argparse.Namespace(demo=False, recipe=tmp_path / "shared.json", max_steps=None)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UserError, match="--trust-reward-file"):
        train._recipe_from(args)
    rewards.agree(path, rewards.file_sha256(path))
    assert train._recipe_from(args).train.grpo_reward_sha256 == rewards.file_sha256(path)
