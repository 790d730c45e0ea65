"""The training recipe, torch side: ``setup()``, ``train()``, ``cleanup()`` over one run folder.

The worker entry point (workers/train.py) drives this class; everything it needs is in the run
folder (recipe.json, plan.json), and everything it produces goes back there (events.jsonl,
state.json, data_report.json, adapter/).
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from studio import checkpoint, evalreport, heldout_cache, methods, models, registry, runs, safety, vision
from studio.events import DONE, HELLO, LOG, METRIC, PROGRESS, WARNING, Emitter
from studio.fsutil import atomic_write_json, read_json
from studio.malloc_trim import return_large_blocks
from studio.recipe import TRL_OBJECTIVES, Recipe, RecipeError
from studio.safetensors_io import DamagedFile, read_header
from studio.scoring import SAMPLE_PARAMS, TIMEOUT_HINT, end_of_turn_ids, evaluate, load_prompts, row_images
from studio.train import dist, faults, loading, moe4bit, packing, recovery, trackers
from studio.train.adapter_save import save_adapter
from studio.train.arguments import training_arguments
from studio.train.callbacks import Control, EventCallback
from studio.train.errors import OutOfMemory
from studio.train.loading import LoadError, compute_dtype
from studio.train.recovery import settings_of


class TrainingRun:
    def __init__(self, run_dir: Path, emitter: Emitter, control: Control, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.resume = resume  # continue from the last good checkpoint (lora-studio resume)
        self.data: Any = None
        self.device = "cpu"
        self.phase = "load"
        self.em = emitter
        self.ctl = control
        self._recipe: Recipe | None = None  # set by setup(): read through .recipe
        self.trainer: Any = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.processor: Any = None  # rows with images on a vision-language model: its processor (studio.vision)
        self._base: Path | None = None  # set by setup(): read through .base
        from studio.train.trainer import StudioTrainer

        # The one place tests/faults/ reach in: unchanged unless LORA_STUDIO_TEST_FAULT is set.
        self.trainer_cls, self.load_model = faults.hook(StudioTrainer, loading.load_model)
        self.heldout: list[dict] = []
        self.answers: dict[str, list[str]] = {}  # held-out answers "before" and "after" training
        self.before_seconds = 0.0  # how long the base model's held-out answers took (or took when cached)
        self.callback: EventCallback | None = None
        self.batch_split: tuple[str, int] | None = None  # several processes: which train field was divided, by what

    @property
    def recipe(self) -> Recipe:
        """The run's recipe; every step after setup() reads it, so reading it earlier is a programming error."""
        if self._recipe is None:
            raise RuntimeError("TrainingRun.setup() has not loaded the recipe yet")
        return self._recipe

    @recipe.setter
    def recipe(self, recipe: Recipe) -> None:
        self._recipe = recipe

    @property
    def base(self) -> Path:
        """The resolved base model folder (setup() resolves 'demo' and hub names to it)."""
        if self._base is None:
            raise RuntimeError("TrainingRun.setup() has not resolved the base model yet")
        return self._base

    @base.setter
    def base(self, base: Path) -> None:
        self._base = base

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        self.recipe = self._load_recipe()
        import torch

        device = self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":  # tensors live in the process's heap: freed ones go back (the planner counts on it)
            return_large_blocks()
        self._fix_strategy()
        self._hello(device)
        self._split_batch()
        if dist.is_main():
            checkpoint.clean_partial(self.run_dir)  # staging folders of a worker that was killed
        runs.write_state(self.run_dir, status="running", pid=os.getpid(), device=device, error=None,
                         host=platform.node(),  # a run on a cluster node is followed through shared storage
                         started=time.strftime("%Y-%m-%dT%H:%M:%S"))  # error=None: a resume clears the last one
        from studio.train import dataset, loading

        self.em.emit(PROGRESS, phase="load", done=0, total=3)
        safety.check_model_path(self.recipe.model.name_or_path)
        if not dist.is_main():
            dist.barrier()  # rank 0 resolves first: 'demo' is converted once, not once per rank
        self.base = loading.resolve_base(self.recipe)
        if dist.is_main():
            dist.barrier()
        self._check_config()
        for w in safety.check_remote_code(self.base, self.recipe.model.trust_remote_code):
            self.em.emit(WARNING, message=w)
        runs.write_state(self.run_dir, base_model=str(self.base))
        self.tokenizer = loading.load_tokenizer(self.base, self.recipe)
        self.em.emit(PROGRESS, phase="load", done=1, total=3)
        safety.check_input_path(self.recipe.data.path, "data.path")
        safety.check_input_path(self.recipe.data.heldout, "data.heldout")
        data = self.data = dataset.build(self.tokenizer, self.recipe, self._processor, str(self.base))
        started_with = runs.read_state(self.run_dir).get("data_fingerprint")
        self._report_data(data)
        now = runs.read_state(self.run_dir).get("data_fingerprint")
        if self.resume and started_with and now != started_with:
            self.em.emit(WARNING, message=f"the dataset {self.recipe.data.path} changed since this run started: "
                                          "the resumed steps will not see the same examples in the same order",
                         fingerprint_before=started_with, fingerprint_now=now)
        self.em.emit(PROGRESS, phase="load", done=2, total=3)
        self._load_model()
        self._log_trainable()
        self.em.emit(PROGRESS, phase="load", done=3, total=3)
        self.trainer = self._build_trainer(data, device)

    def _processor(self) -> Any:
        """The base's processor, asked for by the dataset when its rows carry images (None: a text model)."""
        if self.processor is None and vision.is_vlm(self.base):
            self.processor = vision.load_processor(self.base, self.recipe.model.trust_remote_code,
                                                   self.recipe.data.max_pixels)
        return self.processor

    @property
    def vision(self) -> bool:
        """This run trains the whole vision-language model on rows with images."""
        return bool(getattr(self.data, "vision", False))

    def _check_config(self) -> None:
        """A damaged or absurd config.json (10,000 layers) is refused before transformers spends minutes on it."""

        try:
            models._shape_from_config(models.read_config(self.base), name=str(self.base), source="folder")
            for f in sorted(self.base.glob("*.safetensors")):
                read_header(f)  # a lying or cut-short header: named here, not as safetensors' own error
        except (models.ModelError, DamagedFile) as e:
            raise LoadError(str(e), getattr(e, "hint", "")) from None

    def _load_model(self) -> None:
        from transformers import set_seed


        set_seed(self.recipe.train.seed)
        self.phase = "load"
        try:
            extra = {"vision": True} if self.vision else {}
            self.model = self.load_model(self.base, self.recipe, self.device, **extra)
        except Exception as exc:
            if type(exc).__name__ == "UnpicklingError":  # weights_only=True refused what the pickle holds
                raise safety.refused_pickle(self.base, exc) from None
            if not recovery.is_oom(exc):
                raise
            raise OutOfMemory(f"out of memory while loading {self.base}: the model's weights alone do not fit. "
                              f"What may fit: {recovery.what_might_fit(self.recipe)}",
                              "use quant.mode '4bit' or a smaller model, and close other programs using the GPU",
                              where="load") from None
        self._say_experts()
        self._say_long_context()
        self._say_language_model()
        self._say_linear_attention()

    def _say_linear_attention(self) -> None:
        """Which code runs Qwen3.5's linear-attention layers (fla's kernels or transformers' torch path): it changes
        the speed and the memory the plan counted (studio.memory.linear_attention_bytes), so the log names it."""
        from studio import kernels

        types = getattr(getattr(self.model, "config", None), "layer_types", None) or []
        count = sum(1 for t in types if t == "linear_attention")
        if count:
            self.em.emit(LOG, message=f"linear attention ({count} of {len(types)} layers): "
                                      f"{kernels.linear_attention_words(self.device)}")

    def _say_language_model(self) -> None:
        """A multimodal checkpoint trains its language model alone (studio.multimodal): said in the run log."""
        from studio import multimodal

        note = (vision.training_note(self.recipe.train.vision_lora, self.recipe.quant.mode) if self.vision
                else multimodal.training_note(self.base))
        if note:
            self.em.emit(LOG, message=note)

    def _say_long_context(self) -> None:
        """Which long-sequence parts run (studio.train.long_context), and any asked for that cannot, in the log."""
        from studio.train import long_context

        done = long_context.applied(self.model)
        used = [words for on, words in (
            (done.tiled_head, "the loss through a tiled output layer (no full logits)"),
            (done.tiled_mlp, f"the MLP in tiles of {long_context.MLP_TILE_TOKENS:,} tokens"),
            (done.offload, "activation offloading to host RAM"),
            (done.kernels == "liger", "liger-kernel's fused RMSNorm, RoPE and SwiGLU")) if on]
        if used:
            self.em.emit(LOG, message="long sequences: " + "; ".join(used))
        for note in done.notes:
            self.em.emit(LOG, message=note)

    def _say_experts(self) -> None:
        """A 4-bit MoE trains without its experts (frozen NF4): said in the run each time the model loads, not left to the plan alone."""

        held = moe4bit.quantized_experts(self.model)
        if held:
            adapted = sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in self.model.named_parameters()
                              if p.requires_grad and ".lora_" in n})
            self.em.emit(LOG, message=f"mixture of experts: the experts of {len(held)} layers are held in 4-bit (NF4) "
                                      f"and stay frozen; LoRA adapts {', '.join(adapted) or 'no layer'}")

    def rebuild(self, reload_data: bool = False) -> None:
        """Load the model and Trainer again with the current (stepped-down) settings after an OOM."""
        from studio.train import dataset, recovery

        self.trainer = self.model = None
        recovery.free_memory()
        if reload_data:
            self.data = dataset.build(self.tokenizer, self.recipe, self._processor, str(self.base))
        self._load_model()
        self.trainer = self._build_trainer(self.data, self.device)

    def _load_recipe(self) -> Recipe:
        warnings: list[str] = []
        recipe, effective = recovery.load_recipe(self.run_dir, warnings)
        if effective:
            warnings.append(f"using the settings that last worked after running out of memory "
                            f"({recovery.EFFECTIVE_RECIPE}): {recovery.settings_of(recipe)}")
        for w in warnings:
            self.em.emit(WARNING, message=w)
        problems = recipe.validate()
        if problems:
            raise RecipeError("; ".join(str(p) for p in problems))
        return recipe

    def _hello(self, device: str) -> None:
        import bitsandbytes
        import peft
        import torch
        import transformers

        name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
        ranks = dist.gather({"rank": dist.rank(), "pid": os.getpid(), "device_name": name,
                             "host": platform.node()})
        extra = {"ranks": ranks, "strategy": self.strategy(), "launcher_pid": os.getppid()} if dist.distributed() else {}
        self.em.emit(HELLO, pid=os.getpid(), device=device, device_name=name, python=platform.python_version(),
                     versions={"torch": torch.__version__, "transformers": transformers.__version__,
                               "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__},
                     run_dir=str(self.run_dir), world_size=dist.world_size(), **extra)
        if dist.distributed():
            runs.write_state(self.run_dir, world_size=dist.world_size(), launcher_pid=os.getppid(),
                             strategy=self.strategy())

    def _fix_strategy(self) -> None:
        """The recipe's 'auto' becomes what this run does, so loading (quant storage) and the Trainer agree.

        FSDP shards on GPUs only (accelerate applies its FSDP plugin to accelerator process groups, not
        to gloo on the CPU): on the CPU the processes say so and run DDP.
        """
        if not dist.distributed():
            return
        chosen = self.strategy()
        if chosen == "fsdp" and self.device == "cpu":
            self.em.emit(WARNING, message="FSDP shards the model across GPUs only; on the CPU the processes each "
                                          "hold a full copy (DDP)", kind="strategy")
            chosen = "ddp"
        self.recipe.train.strategy = chosen

    def _split_batch(self) -> None:
        """Several processes share the recipe's effective batch (micro_batch x grad_accum) rather than
        multiply it, so the training maths and the losses are those of one process: the micro-batch
        is divided when it can be, else the accumulation."""
        n = dist.world_size()
        t = self.recipe.train
        if n <= 1:
            return
        name = "micro_batch" if t.micro_batch % n == 0 else "grad_accum" if t.grad_accum % n == 0 else None
        if name is None:
            self.em.emit(WARNING, message=f"the effective batch {t.micro_batch} x {t.grad_accum} cannot be shared by "
                                          f"{n} processes: each takes the whole, so a step sees "
                                          f"{t.micro_batch * t.grad_accum * n} examples", kind="batch")
            return
        setattr(t, name, getattr(t, name) // n)
        self.batch_split = (name, n)
        self.em.emit(LOG, message=f"{n} processes share the effective batch {t.micro_batch * t.grad_accum * n}: each "
                                  f"takes micro-batch {t.micro_batch} x {t.grad_accum} accumulation",
                     micro_batch=t.micro_batch, grad_accum=t.grad_accum, world_size=n)

    def strategy(self) -> str:
        """single, ddp or fsdp: how the processes share the work (the recipe's, or the planner's for auto)."""
        if not dist.distributed():
            return "single"
        chosen = self._recipe.train.strategy if self._recipe else "auto"
        if chosen == "auto":
            plan = read_json(self.run_dir / runs.PLAN, default={}) or {}
            planned = plan.get("strategy")
            chosen = str(planned) if planned in ("ddp", "fsdp") else "ddp"
        return chosen

    def _report_data(self, data: Any) -> None:
        report = data.report
        as_dict = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        if dist.is_main():
            atomic_write_json(self.run_dir / "data_report.json", as_dict)
        fingerprint = as_dict.get("fingerprint")
        runs.write_state(self.run_dir, data_fingerprint=fingerprint)
        n_val = len(data.val) if data.val else len(data.val_examples or []) if data.prompts is not None else 0
        trained = f"{data.trained_tokens} trained tokens" if data.prompts is None else "the completions sampled"
        self.em.emit(LOG, message=f"dataset: {len(data.train)} training and {n_val} validation examples, {trained}",
                     train_examples=len(data.train), val_examples=n_val,
                     skipped=as_dict.get("skipped", 0), fingerprint=fingerprint)
        if getattr(data, "pairs", None) is not None:
            self.em.emit(LOG, message=f"{self.recipe.train.objective}: {data.pairs.pairs} chosen/rejected pairs for "
                                      f"training, {len(data.val) if data.val else 0} for validation",
                         train_pairs=data.pairs.pairs, val_pairs=len(data.val) if data.val else 0)
        if getattr(data, "prompts", None) is not None:
            t = self.recipe.train
            from studio import rewards

            self.em.emit(LOG, message=f"grpo: {data.prompts} prompts; each optimizer step samples "
                                      f"{t.grpo_generations} completions (up to {t.grpo_completion_len} tokens, "
                                      f"temperature {t.grpo_temperature:g}) of each of "
                                      f"{t.micro_batch * t.grad_accum // t.grpo_generations} prompt(s); rewards: "
                                      f"{rewards.describe(rewards.settings_from(self.recipe))}; KL weight "
                                      f"{t.grpo_beta:g}", train_prompts=data.prompts)
        for note in as_dict.get("notes") or []:  # what the import left out or changed, said at the start
            self.em.emit(LOG, message=f"dataset: {note}")
        if data.refused:
            first = f" (first, {data.refusal})" if getattr(data, "refusal", "") else ""
            self.em.emit(WARNING, message=f"{data.refused} conversations were skipped because the model's chat "
                                          f"template refuses them{first}; 'lora-studio data inspect FILE --model "
                                          "MODEL' lists them")
        from studio.train.dataset import length_warnings

        for text in length_warnings(data, self.recipe.train.seq_len):  # cut and left out, train and validation apart
            self.em.emit(WARNING, message=text, kind="length", train_cut=data.truncated, train_dropped=data.dropped,
                         val_cut=data.val_cut, val_dropped=data.val_dropped)

    def _log_trainable(self) -> None:
        trainable, total = self.model.get_nb_trainable_parameters()

        self.em.emit(LOG, message=f"{methods.get(self.recipe.lora.method).label}: {trainable:,} trainable of "
                                  f"{total:,} parameters", trainable_params=trainable, total_params=total,
                     method=self.recipe.lora.method)

    def _build_trainer(self, data: Any, device: str) -> Any:
        import torch

        if self.recipe.train.objective in TRL_OBJECTIVES:
            return self._build_preference_trainer(data, device)
        from transformers import DataCollatorForSeq2Seq


        dtype = self.model.get_base_model().dtype if hasattr(self.model, "get_base_model") else torch.float32

        args = training_arguments(self.recipe, self.run_dir / runs.CHECKPOINTS, device, dtype,
                                  use_eval=data.val is not None, run_name=self.run_dir.name,
                                  report_to=trackers.report_to(self.run_dir, self._warn_once),
                                  strategy=self.strategy())
        plan = read_json(self.run_dir / runs.PLAN, default={}) or {}
        predicted = (plan.get("predicted") or {}).get("device_total_bytes")
        self.callback = EventCallback(self.em, self.ctl, self.run_dir, budget=plan.get("budget_bytes"),
                                      predicted_peak=predicted)
        from transformers.trainer_callback import PrinterCallback

        collator = DataCollatorForSeq2Seq(self.tokenizer, padding=True, label_pad_token_id=-100)
        if self.vision:  # pads the ids and makes each batch's pixels (studio.vision)
            collator = vision.VisionCollator(self.processor, self.recipe.data.max_pixels)
        elif self.recipe.train.packing:  # one sequence per micro-batch, attention kept within each example

            packing.check(self.model, self.recipe.train.attn, len(self.tokenizer))
            collator = packing.collator()
            self.em.emit(LOG, message="packing: each micro-batch is one sequence without padding; attention "
                                      "stays within each example (checked on this model)")
        from studio.train.speedlog import example_lengths
        from studio.train.trainer import SaveOnStop

        timer = self._step_timer(device, data.train.lengths() if self.vision else example_lengths(data.train))
        trainer = self.trainer_cls(model=self.model, args=args, train_dataset=data.train,
                                eval_dataset=data.val, data_collator=collator,
                                callbacks=[self.callback, SaveOnStop(self.ctl), timer], run_dir=self.run_dir, emitter=self.em,
                                keep=self.recipe.train.keep_checkpoints, settings=settings_of(self.recipe))
        trainer.remove_callback(PrinterCallback)  # it prints log dicts; our events carry them
        from studio.train import peft_methods

        if peft_methods.is_adalora(self.model):  # the rank allocator runs after every optimizer step
            trainer.add_callback(peft_methods.AdaLoraCallback(self.model))
        return trainer

    def _build_preference_trainer(self, data: Any, device: str) -> Any:
        """TRL's DPO, ORPO or GRPO trainer behind the studio's safety layer, hooked like the SFT one."""
        import torch
        from transformers.trainer_callback import PrinterCallback

        from studio.train import faults, preference
        from studio.train.trainer import SaveOnStop, StudioTrainer

        objective = self.recipe.train.objective
        cls, _ = faults.hook(preference.trainer_class(objective, StudioTrainer), self.load_model)
        dtype = self.model.get_base_model().dtype if hasattr(self.model, "get_base_model") else torch.float32

        args = training_arguments(self.recipe, self.run_dir / runs.CHECKPOINTS, device, dtype,
                                  use_eval=data.val is not None, config_cls=preference.config_class(objective),
                                  run_name=self.run_dir.name, strategy=self.strategy(),
                                  report_to=trackers.report_to(self.run_dir, self._warn_once),
                                  **preference.config_overrides(self.recipe))
        plan = read_json(self.run_dir / runs.PLAN, default={}) or {}
        predicted = (plan.get("predicted") or {}).get("device_total_bytes")
        self.callback = EventCallback(self.em, self.ctl, self.run_dir, budget=plan.get("budget_bytes"),
                                      predicted_peak=predicted)
        extra = {"reward_funcs": self._reward_functions()} if objective == "grpo" else {}
        callbacks = [self.callback, SaveOnStop(self.ctl)]
        if objective == "grpo":
            self._sample_like_the_studio()
            # grpo's steps are mostly sampling: they calibrate the next grpo estimate (speed.device_key), predicted
            # at the length the plan timed them at (the inspected rows' 95th percentile, kept in plan.json).
            timed = plan.get("estimate")
            p95 = timed.get("example_tokens") if isinstance(timed, dict) else None
            callbacks.append(self._step_timer(device, [], p95 if isinstance(p95, int) else None))
        trainer = cls(model=self.model, args=args, train_dataset=data.train, eval_dataset=data.val,
                      processing_class=self.tokenizer, callbacks=callbacks,
                      run_dir=self.run_dir, emitter=self.em, keep=self.recipe.train.keep_checkpoints,
                      settings=settings_of(self.recipe), **extra)
        trainer.remove_callback(PrinterCallback)
        self.callback.trainer = trainer
        return trainer

    def _step_timer(self, device: str, lengths: list[int], p95: int | None = None) -> Any:
        """The callback that times the optimizer steps and records them against the estimate (studio.train.speedlog)."""
        import torch

        from studio.train.speedlog import StepTimes

        return StepTimes(self.run_dir, self.recipe, device, lengths, p95=p95,
                         gpu_name=torch.cuda.get_device_name(0) if device == "cuda" else "",
                         model=str(self._base or self.recipe.model.name_or_path))

    def _reward_functions(self) -> list:
        """grpo's rewards (studio.rewards); a user's reward file is loaded here, in the worker, and its sha256
        goes into state.json (and so the adapter's metadata)."""
        from studio import rewards

        try:
            built = rewards.Rewards(rewards.settings_from(self.recipe), on_timeout=self._pattern_timeout)
        except rewards.RewardError as e:
            raise RecipeError(str(e)) from None
        if built.sha256:
            runs.write_state(self.run_dir, reward_file={"path": str(self.recipe.train.grpo_reward_file),
                                                        "sha256": built.sha256})
            self.em.emit(WARNING, message=f"running your reward function from {self.recipe.train.grpo_reward_file} "
                                          f"(sha256 {built.sha256}), as you agreed", kind="reward_file",
                         sha256=built.sha256)
        return built.functions()

    def _sample_like_the_studio(self) -> None:
        """grpo samples through TRL, which renders prompts with the tokenizer's own template and stops at the
        generation config's end of sequence: give it the template the studio renders with (ChatML for a model
        without one) and the template's end-of-turn marker too, so completions end where an answer ends."""
        from studio.data.template import chat_template
        from studio.scoring import end_of_turn_ids

        if not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = chat_template(self.tokenizer)
        ends = end_of_turn_ids(self.tokenizer)
        config = getattr(self.model, "generation_config", None)
        if config is not None and ends:
            config.eos_token_id = ends

    def _pattern_timeout(self, where: str) -> None:
        from studio.scoring import MATCH_TIMEOUT_S, TIMEOUT_HINT

        self._warn_once(f"the pattern reward ran out of time ({MATCH_TIMEOUT_S:g} s) on a completion of dataset {where}: "
                        f"scored 0 and counted as not matching; {TIMEOUT_HINT}")

    # -- train ------------------------------------------------------------------------------
    def train(self) -> str:
        """Train to the end (or until stopped); returns the final status.

        A finished run answers the held-out prompts again and writes eval.json; a stopped one
        only saves its adapter (the user asked to stop: 'lora-studio eval RUN' evaluates it later).
        """

        before = self._sample("before") if dist.is_main() else None  # the others wait: rank 0 alone answers
        dist.barrier()
        if self.callback is not None:  # answering them again after training takes about as long
            self.callback.after_train_s = round(self.before_seconds * (2 if self.data.val else 1), 1)
        start = self._resume_point() if self.resume else None
        recovery.train_with_recovery(self, start)
        stopped = dist.agree_flags(self.ctl.stop.is_set())[0]  # every rank ends the same way
        if stopped:
            self.ctl.stop.set()
        if self.trainer.eval_dataset is not None and not stopped:
            self.trainer.evaluate()  # the callback reports eval_loss as a metric event
        self.save_adapter()
        if dist.distributed():
            return self._finish_ranks(stopped, before)
        if stopped:
            self.em.emit(LOG, message=f"stopped: the held-out answers and eval.json were skipped; "
                                      f"'lora-studio eval {self.run_dir}' writes them")
            return "stopped"
        after = self._sample("after")
        if before is not None and after is not None:
            runs.write_state(self.run_dir, heldout_before=before, heldout_after=after)
        if not self.ctl.stop.is_set():
            self.write_eval()
        return "stopped" if self.ctl.stop.is_set() else "finished"

    def _resume_point(self) -> Any:
        """Rank 0 picks the checkpoint (setting damaged ones aside); every rank resumes from the same one."""

        ck = recovery.resume_point(self.run_dir, self.em) if dist.is_main() else None
        if ck is not None:
            saved = len(list(ck.path.glob("rng_state_*.pth"))) or 1  # one RNG state per process that saved it
            if saved != dist.world_size():
                self.em.emit(WARNING, message=f"checkpoint {ck.path.name} was written by {saved} process(es) and this "
                                              f"run has {dist.world_size()}: training continues, but the data order "
                                              f"and dropout differ from an uninterrupted run (resume with train.nproc "
                                              f"{saved} for a bit-exact continuation)", saved_world_size=saved)
        found = dist.broadcast([str(ck.path), ck.step] if ck else None)
        return checkpoint.Checkpoint(Path(found[0]), int(found[1])) if found else None

    def _finish_ranks(self, stopped: bool, before: float | None) -> str:
        """After training on several processes: rank 0 answers the held-out prompts and writes eval.json
        on its own copy of the model (DDP); the others wait. FSDP shards the model, so evaluation is
        left to 'lora-studio eval RUN' (one process)."""
        status = "stopped" if stopped else "finished"
        if dist.is_main():
            if stopped:
                self.em.emit(LOG, message=f"stopped: the held-out answers and eval.json were skipped; "
                                          f"'lora-studio eval {self.run_dir}' writes them")
            elif self.strategy() == "fsdp":
                self.em.emit(LOG, message=f"the model is sharded across {dist.world_size()} processes: held-out "
                                          f"answers and eval.json come from 'lora-studio eval {self.run_dir}'")
            else:
                after = self._sample("after")
                if before is not None and after is not None:
                    runs.write_state(self.run_dir, heldout_before=before, heldout_after=after)
                if not self.ctl.stop.is_set():
                    self.write_eval()
        dist.barrier()
        return status

    def write_eval(self) -> None:
        """eval.json: validation loss of base and adapter on the same tokens, held-out answers of both."""

        val = self.data.lm_rows()  # DPO/ORPO: the chosen conversations (the pairs themselves have no labels)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        batch = self.recipe.train.micro_batch
        if self.vision:  # with the images: the collator makes each batch's pixels
            collator = vision.VisionCollator(self.processor, self.recipe.data.max_pixels)
            rows = self.data.val or vision.VisionDataset([])

            def loss() -> tuple[float | None, int]:
                return vision.validation_loss(self.model, rows, collator, batch)
        else:
            def loss() -> tuple[float | None, int]:
                return evalreport.validation_loss(self.model, val, pad, batch)
        self.em.emit(PROGRESS, phase="eval-loss", done=0, total=2)
        loss_adapter, tokens = loss()
        self.em.emit(PROGRESS, phase="eval-loss", done=1, total=2)
        with self.model.disable_adapter():
            loss_base, _ = loss()
        self.em.emit(PROGRESS, phase="eval-loss", done=2, total=2)
        if self.heldout:
            rows, source = self.heldout, str(self.recipe.data.heldout)
            answers = dict(self.answers)  # before = the fresh adapter (B = 0): exactly the base model
        else:  # a vision run's validation prompts are answered with their images (the processor renders them)
            rows, source = evalreport.fallback_rows(self.data.val_examples or []), "validation examples"
            rows, longer = evalreport.within_length(self.tokenizer, rows, self.recipe.train.seq_len,
                                                    self._vision_processor())
            if longer:
                self.em.emit(LOG, message=f"evaluation: {longer} validation prompt(s) longer than the run's sequence "
                                          f"length ({self.recipe.train.seq_len} tokens) are not answered, only "
                                          f"scored by the validation loss; {len(rows)} are answered")
            answers = {}
            if rows:
                answers["adapter"] = self._answer(rows, "eval-adapter")
                with self.model.disable_adapter():
                    answers["base"] = self._answer(rows, "eval-base")
        scored = any(r.get("pattern") for r in rows)
        report = evalreport.build({"base": loss_base, "adapter": loss_adapter}, tokens, len(val), rows,
                                  {"base": answers.get("before", answers.get("base", [])),
                                   "adapter": answers.get("after", answers.get("adapter", []))},
                                  source, scored, stopped=self.ctl.stop.is_set(),
                                  adapter=str(self.run_dir / runs.ADAPTER), base_model=str(self.base))
        path = evalreport.write(self.run_dir, report)
        summary = evalreport.summary(report)
        runs.write_state(self.run_dir, eval=summary)
        self.em.emit(METRIC, step=self.trainer.state.global_step, eval_report=str(path), **summary,
                     eval_text=evalreport.format_text(report))

    def _answer(self, rows: list[dict], phase: str) -> list[str]:
        return evalreport.answer_rows(self.model, self.tokenizer, rows, phase,
                                      lambda **kw: self.em.emit(PROGRESS, **kw), self.ctl.stop.is_set,
                                      batch_size=len(rows), processor=self._vision_processor())

    def _vision_processor(self) -> Any:
        """The processor prompts are rendered with when the whole vision-language model is loaded (their images
        answered with them); None for a text run."""
        return self.processor if self.vision else None

    def save_adapter(self) -> Path:
        """The PEFT adapter, written to a temp folder and renamed: never half a folder (``adapter_save``)."""

        return save_adapter(self.model, self.trainer, self.run_dir, self.base, self.em,
                            sharded=dist.distributed() and self.strategy() == "fsdp")

    def _sample(self, when: str) -> float | None:
        """Answer the held-out prompts (if the recipe has them) and report the score.

        One batch on the CPU (much faster than one prompt at a time), with progress per prompt as
        each answer completes, and an ETA; a stop request ends the answers at the next token.
        """
        if not self.recipe.data.heldout:
            return None

        if not self.heldout:
            self.heldout = load_prompts(Path(self.recipe.data.heldout))
            with_images = sum(1 for r in self.heldout if row_images(r))
            if with_images and not self.vision:
                raise LoadError(f"{self.recipe.data.heldout}: {with_images} held-out prompt(s) carry images, and this "
                                "run trains a text model (or text rows)",
                                "give held-out prompts without images, or train a vision-language model on rows "
                                "with images")
            ends = ", ".join(self.tokenizer.convert_ids_to_tokens(end_of_turn_ids(self.tokenizer,
                                                                                  self._vision_processor())))
            self.em.emit(LOG, message=f"held-out prompts: {len(self.heldout)}, answered greedily before and after "
                                      f"training, each ending at {ends} or after {SAMPLE_PARAMS['max_new_tokens']} "
                                      "new tokens")
        answers = self._base_answers() if when == "before" else self._answer(self.heldout, f"sample-{when}")
        if self.ctl.stop.is_set():
            return None  # cut short: not a score
        self.answers[when] = answers
        # Rows without a pattern are samples to read, not a score (the default pattern is the demo's format).
        result = evaluate(answers, self.heldout) if any(r.get("pattern") for r in self.heldout) else None
        value = result.score if result is not None else None
        if result is not None and result.timed_out:
            self.em.emit(WARNING, message=f"{self.recipe.data.heldout}: the pattern of row(s) "
                                          f"{', '.join(map(str, result.timed_out))} ran out of time against the "
                                          f"{when} answer: not scored", hint=TIMEOUT_HINT)
        self.em.emit(METRIC, step=self.trainer.state.global_step, **{f"heldout_score_{when}": value},
                     sample_prompt=self.heldout[0]["messages"][-1]["content"], sample_answer=answers[0].strip())
        return value

    def _base_answers(self) -> list[str]:
        """The held-out answers before training: the base model's (the fresh adapter adds exactly 0),
        from the cache when a run on the same base, prompts and settings already computed them."""
        from studio.scoring import SAMPLE_PARAMS

        q = self.recipe.quant
        load = {"quant": q.mode, "double_quant": q.double_quant, "quant_type": q.quant_type,
                "dtype": str(compute_dtype(self.recipe)), "attn": self.recipe.train.attn, "device": self.device}
        generation: dict[str, Any] = {**SAMPLE_PARAMS, "batch": len(self.heldout), "stop_at": self.tokenizer.eos_token}
        pictures = [p for r in self.heldout for p in row_images(r)]
        if pictures:  # the images are part of the prompts (the file names them by path only)
            generation.update(images=heldout_cache.files_fingerprint(pictures), max_pixels=self.recipe.data.max_pixels)
        key = heldout_cache.key(self.base, Path(self.recipe.data.heldout), load, generation,
                                getattr(self.tokenizer, "chat_template", None))
        n = len(self.heldout)
        cached = heldout_cache.load(key, n)
        if cached is not None:
            self.before_seconds = float(cached.get("seconds") or 0.0)
            self.em.emit(PROGRESS, phase="sample-before", done=n, total=n, eta_s=0, cached=True)
            self.em.emit(LOG, message=f"held-out answers before training: the base model's, from the cache "
                                      f"(computed by run {cached.get('run')} on {cached.get('created')}; same weights, "
                                      "prompts, quantisation, generation settings and library versions)")
            return list(cached["answers"])
        t0 = time.time()
        with self.model.disable_adapter():  # the base's answers: a fresh prefix/prompt adapter is not a no-op
            answers = self._answer(self.heldout, "sample-before")
        self.before_seconds = time.time() - t0
        if not self.ctl.stop.is_set():
            try:
                heldout_cache.save(key, answers, self.before_seconds, self.run_dir.name)
            except OSError as e:
                self.em.emit(LOG, message=f"the held-out answers could not be kept for the next run ({e})")
        return answers

    def _warn_once(self, message: str) -> None:
        """A warning event said once per worker (the Trainer is rebuilt after an out-of-memory step-down)."""
        said = self.__dict__.setdefault("_warned", set())
        if message not in said:
            said.add(message)
            self.em.emit(WARNING, message=message)

    # -- cleanup ----------------------------------------------------------------------------
    def finish(self, status: str) -> None:
        if not dist.is_main():
            return
        state = runs.write_state(self.run_dir, status=status, pid=None,
                                 finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self._write_registry()
        self.em.emit(DONE, status=status, adapter=str(self.run_dir / runs.ADAPTER),
                     step=state.get("step"), last_loss=state.get("last_loss"),
                     heldout_before=state.get("heldout_before"), heldout_after=state.get("heldout_after"),
                     eval=state.get("eval") if status == "finished" else None)

    def _write_registry(self) -> None:
        """adapter/lora_studio.json: the adapter explains itself (base, data, recipe, metrics, eval)."""

        try:
            path = registry.write_metadata(self.run_dir)
        except OSError as e:
            self.em.emit(WARNING, message=f"the adapter's metadata ({registry.META_FILE}) could not be written: {e}")
            return
        if path is not None:
            self.em.emit(LOG, message=f"adapter metadata: {path}", path=str(path))
