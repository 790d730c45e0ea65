"""The objectives TRL trains (DPO, ORPO, GRPO) with TRL's own trainers inside the studio's safety layer.

- The data: the importer's chosen/rejected pairs (``studio.data.pairs``), tokenised by us with the
  model's chat template exactly like SFT examples, handed to TRL already tokenised.
- The trainers: ``StudioTrainer`` (staged checkpoints with manifests, NaN stop, OOM phases,
  fresh optimizer after the OOM ladder) mixed in front of TRL's ``DPOTrainer`` or ``ORPOTrainer``;
  the worker passes the class through ``faults.hook`` like the SFT one. TRL computes every loss.
- DPO's reference model is the base with the adapter disabled: TRL 1.16 copies the adapter of a
  PeftModel it is given into a frozen "ref" adapter (meant for re-training a trained adapter); ours
  is freshly initialised (LoRA's B = 0, so it adds exactly nothing), so we drop that copy and TRL
  then takes the reference inside ``disable_adapter()``: one copy of the base weights, no second model.
- TRL's DPOTrainer casts a quantised model's adapter to bf16; we keep it in fp32 as SFT does.
- GRPO: TRL's ``GRPOTrainer`` samples ``train.grpo_generations`` completions per prompt and scores them
  with ``studio.rewards``; the reference (KL) is again the base with the adapter disabled, and the
  adapter stays fp32. Each logged step carries a few of the latest completions with their rewards.
"""
from __future__ import annotations

from typing import Any

from studio.recipe import Recipe

# What TRL logs besides the loss, forwarded in metric events (and eval_ + these after an evaluation).
PREFERENCE_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                      "logps/chosen", "logps/rejected", "nll_loss", "log_odds_ratio", "log_odds_chosen")
REF_ADAPTER = "ref"
# GRPO's metrics forwarded in metric events (besides each reward's rewards/<name>/mean and /std).
GRPO_METRICS = ("reward", "reward_std", "kl", "entropy", "frac_reward_zero_std", "completions/mean_length",
                "completions/max_length", "completions/clipped_ratio", "completions/mean_terminated_length")
SHOWN_SAMPLES = 3  # the best, a middle and the worst completion of the latest prompt
SAMPLE_CHARS = 600


def drop_reference_copy(model: Any) -> None:
    """Remove TRL's copy of a fresh adapter, so the reference is the base with the adapter disabled."""
    config = getattr(model, "peft_config", None)
    if config and REF_ADAPTER in config:
        model.delete_adapter(REF_ADAPTER)


def keep_adapter_dtype(model: Any, kept: dict) -> None:
    """Undo TRL's cast of a quantised model's adapter to bf16: the studio trains adapters in fp32 for
    every objective (what the planner predicts, and what a checkpoint restores bit-exactly)."""
    for name, param in model.named_parameters():
        if name in kept and param.data.dtype != kept[name].dtype:
            param.data = kept[name]


def base_is_reference(studio_trainer: type, trl_trainer: type) -> type:
    """``studio_trainer`` before a TRL trainer that takes its reference from a PeftModel (DPO, GRPO): TRL's
    copy of our fresh adapter is dropped, so the reference is the base with the adapter disabled, and the
    adapter keeps its fp32 tensors."""

    class BaseIsReference(studio_trainer, trl_trainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            model = kwargs["model"]
            kept = {n: p.data for n, p in model.named_parameters() if p.requires_grad}
            super().__init__(*args, **kwargs)
            drop_reference_copy(self.model)
            keep_adapter_dtype(self.model, kept)

    return BaseIsReference


def trainer_class(objective: str, studio_trainer: type) -> type:
    """``studio_trainer`` in front of TRL's trainer for ``objective`` (cooperative ``super()`` calls)."""
    if objective == "dpo":
        from trl import DPOTrainer

        dpo_base: Any = base_is_reference(studio_trainer, DPOTrainer)

        class StudioDPOTrainer(dpo_base):
            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                if "prompt_ids" in dataset.column_names:  # tokenised by studio.data.pairs with our masks
                    return dataset
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        return StudioDPOTrainer
    if objective == "orpo":
        import os

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO lives in trl.experimental in TRL 1.x
        from trl.experimental.orpo import ORPOTrainer

        class StudioORPOTrainer(studio_trainer, ORPOTrainer):
            def tokenize_row(self, feature, model=None) -> dict:
                if "prompt_ids" not in feature:
                    return super().tokenize_row(feature, model)
                return orpo_row(feature)

            def training_step(self, model, inputs, num_items_in_batch=None):
                # ORPO's batches have no "input_ids", where the Trainer counts tokens: count them here.
                self.state.num_input_tokens_seen += sum(int(inputs[k].sum()) for k in (
                    "chosen_attention_mask", "rejected_attention_mask") if k in inputs)
                return super().training_step(model, inputs, num_items_in_batch)

        return StudioORPOTrainer
    if objective == "grpo":
        from trl import GRPOTrainer

        grpo_base: Any = base_is_reference(studio_trainer, GRPOTrainer)

        class StudioGRPOTrainer(grpo_base):
            def log(self, logs: dict, start_time: float | None = None) -> None:
                if "loss" in logs and self.model.training:  # read by EventCallback.on_log, not by trackers
                    self.shown_samples = latest_samples(self._logs, self.reward_weights.tolist(),
                                                        self.num_generations)
                super().log(logs, start_time)

        return StudioGRPOTrainer
    raise ValueError(f"no preference trainer for objective {objective!r}")


def orpo_row(feature: dict) -> dict:
    """ORPOTrainer's tokenised row from our ids: prompt, and each ending after it with the prompt masked."""
    prompt, out = list(feature["prompt_ids"]), {}
    out["prompt_input_ids"], out["prompt_attention_mask"] = prompt, [1] * len(prompt)
    for side in ("chosen", "rejected"):
        ids = prompt + list(feature[f"{side}_ids"])
        out[f"{side}_input_ids"], out[f"{side}_attention_mask"] = ids, [1] * len(ids)
        out[f"{side}_labels"] = [-100] * len(prompt) + list(feature[f"{side}_ids"])
    return out


def latest_samples(logs: dict, weights: list[float], group: int) -> list[dict]:
    """The latest prompt's completions, best, middle and worst, with their weighted reward (GRPOTrainer._logs)."""
    from studio.rewards import completion_text, last_user_text

    prompts, completions = list(logs.get("prompt") or []), list(logs.get("completion") or [])
    per_func = logs.get("rewards") or {}
    n = min(len(prompts), len(completions))
    if not n:
        return []
    names = list(per_func)
    start = max(0, n - group)
    shown: list[dict[str, Any]] = []
    for i in range(start, n):
        parts = {name: float(list(per_func[name])[i]) for name in names if i < len(per_func[name])}
        total = sum(w * parts.get(name, 0.0) for name, w in zip(names, weights))
        shown.append({"prompt": last_user_text(prompts[i])[-SAMPLE_CHARS:],
                      "completion": completion_text(completions[i])[:SAMPLE_CHARS],
                      "reward": round(total, 4), "rewards": {k: round(v, 4) for k, v in parts.items()}})
    shown.sort(key=lambda d: -d["reward"])
    picks = sorted({0, len(shown) // 2, len(shown) - 1})[:SHOWN_SAMPLES]
    return [shown[i] for i in picks]


def config_class(objective: str) -> type:
    if objective == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    if objective == "dpo":
        from trl import DPOConfig

        return DPOConfig
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig


def config_overrides(recipe: Recipe) -> dict:
    """TRL's settings for our recipe. TRL's own defaults that differ from transformers' are undone:
    gradient checkpointing is switched on the model by loading.py, never by the Trainer."""
    t = recipe.train
    if t.objective == "grpo":
        return grpo_overrides(recipe)
    # TRL switches checkpointing off around DPO's reference forward and on again with these kwargs:
    # the same non-reentrant checkpointing loading.py enabled.
    out = {"beta": t.pref_beta, "max_length": t.seq_len, "gradient_checkpointing": False,
           "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if t.objective == "orpo":
        out["include_num_input_tokens_seen"] = "no"  # counted by StudioORPOTrainer.training_step
    return out


def grpo_overrides(recipe: Recipe) -> dict:
    """GRPOConfig for the recipe: sampling and KL from train.grpo_*, the reward weights of the mix.

    The generation batch is the effective batch (micro_batch x grad_accum completions, whole groups of
    grpo_generations: Recipe.validate checks it), sampled once per optimizer step. No evaluation pass
    through GRPO (it would sample the validation prompts too); eval.json scores the held-out prompts."""
    from studio.rewards import parse_mix

    t = recipe.train
    return {"num_generations": t.grpo_generations, "max_completion_length": t.grpo_completion_len,
            "temperature": t.grpo_temperature, "beta": t.grpo_beta,
            "reward_weights": [w for _, w in parse_mix(t.grpo_rewards)],
            "log_completions": False, "gradient_checkpointing": False,
            "include_num_input_tokens_seen": "no",  # GRPO counts prompt and completion tokens itself
            "gradient_checkpointing_kwargs": {"use_reentrant": False}, "eval_strategy": "no"}


def pair_rows_summary(stats: Any, path: str) -> list[str]:
    """What the pairs import left out, in words (said at the start of the run)."""
    notes = []
    if stats.unpaired:
        notes.append(f"{stats.unpaired} example(s) in {path} have no rejected answer and are not used by "
                     "the preference objective")
    if stats.too_long:
        notes.append(f"{stats.too_long} pair(s) were left out: the prompt alone fills train.seq_len "
                     "(raise it to use them)")
    if stats.truncated:
        notes.append(f"{stats.truncated} pair(s) had an answer cut to train.seq_len")
    return notes
