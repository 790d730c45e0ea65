"""The GGUF in llama.cpp itself: greedy answers of ``llama-simple`` against the merged model's.

``GreedyCheck`` starts one llama.cpp process per fixed prompt once the GGUF is written, lets the
other checks (``studio.export.verify``) run while they answer, and judges their text against the
merged model in transformers (or the export cache's earlier verdicts). Skipped, saying so, when
llama.cpp is not installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from studio.data.light_tokenizer import LightTokenizer
from studio.export import cache, verify
from studio.export.errors import VerificationFailed
from studio.export.gguf_readback import gguf_reader
from studio.export.verify import Check
from studio.malloc_trim import release_freed_memory
from studio.safetensors_io import DTYPES


def llama_simple() -> Path | None:
    """llama.cpp's ``llama-simple`` (greedy generation), if installed: LORA_STUDIO_LLAMA_CPP (its folder
    or a build with bin/) or on PATH."""
    return llama_tool("llama-simple")


def llama_tool(name: str) -> Path | None:
    """The llama.cpp program ``name``: in LORA_STUDIO_LLAMA_CPP (the folder, its bin/ or build/bin/), else on PATH."""
    import os
    import shutil

    root = os.environ.get("LORA_STUDIO_LLAMA_CPP")
    if root:
        for cand in (Path(root) / name, Path(root) / "bin" / name, Path(root) / "build" / "bin" / name):
            if cand.is_file():
                return cand
    found = shutil.which(name)
    return Path(found) if found else None


def without_added_bos(tok: Any, ids: list[int]) -> list[int]:
    """The prompt as text for llama.cpp, which adds BOS itself when the tokenizer does (the GGUF's
    add_bos_token): a chat template that writes ``bos_token`` (Llama 3, Gemma) would otherwise reach
    llama.cpp with two BOS tokens, which transformers never saw."""
    bos = getattr(tok, "bos_token_id", None)
    adds = bos is not None and tok("a")["input_ids"][:1] == [bos]
    return ids[1:] if adds and ids[:1] == [bos] else ids


def merged_in_memory(weights: Any, trust: bool = False) -> Any:
    """The merged model in transformers (float32): the base loaded, each weight the adapter changes set
    to its merged value in the base dtype, exactly as a merged folder would load."""
    import torch

    from studio import multimodal

    model = load_text_model(weights.base_dir, trust)
    params = checkpoint_params(model, [m.name for m in weights.metas()])
    # a tower's weights (an image run with train.vision_lora) are the projector file's, not the language model's
    changed = {n for n in weights.changed() if multimodal.to_text(n) is not None}
    metas = {m.name: m for m in weights.metas() if m.name in changed}
    missing = sorted(changed - set(params))
    if missing:
        raise VerificationFailed(f"the loaded model has no parameter {missing[0]} for the adapter's update",
                                 "export with --format merged and report this model")

    with torch.no_grad():  # the merge's own arithmetic on the loaded float32 values, no second read
        for name, meta in metas.items():
            w, dtype = params[name].data, getattr(torch, DTYPES[meta.dtype])
            if name in weights.adapter.replacements:
                w.copy_(weights.adapter.replacements[name].to(dtype).reshape(w.shape).float())
                continue
            weights.adapter.deltas[name].add_to(w)  # float32 in place, as merge.merged_tensor does
            if dtype != torch.float32:
                w.copy_(w.to(dtype).float())  # the merged folder holds it in the base dtype
    return model


# Vision-language models whose language model transformers has no causal-LM class for, and the text model it
# is on text alone: Qwen2-VL's M-RoPE turns every pair by the one position when there is no image (the three
# position axes are equal), so its language model answers text exactly as a Qwen2 with the same weights.
TEXT_TWINS = {"qwen2_vl": "qwen2", "qwen2_5_vl": "qwen2"}


def load_text_model(folder: Path, trust: bool = False) -> Any:
    """The language model in ``folder`` in float32, as llama.cpp's GGUF holds it (``multimodal.load_causal_lm``;
    for Qwen2-VL / Qwen2.5-VL, whose language model transformers loads only inside the whole model, its Qwen2
    twin with the checkpoint's weights), for the greedy check's reference answers."""
    import json

    import torch

    from studio import multimodal

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    twin = TEXT_TWINS.get(str(config.get("model_type")))
    if twin is None:
        return multimodal.load_causal_lm(folder, dict(dtype=torch.float32, trust_remote_code=trust))
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    whole = AutoModelForImageTextToText.from_pretrained(str(folder), dtype=torch.float32, trust_remote_code=trust)
    text = whole.config.get_text_config().to_dict()
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "hidden_act", "bos_token_id",
            "eos_token_id", "pad_token_id")
    rope = dict(text.get("rope_parameters") or {})
    twin_config = AutoConfig.for_model(twin, **{k: text[k] for k in keep if k in text},
                                       rope_parameters={"rope_type": "default",
                                                        "rope_theta": float(rope.get("rope_theta", 10000.0))},
                                       tie_word_embeddings=bool(getattr(whole.config, "tie_word_embeddings", False)))
    model = AutoModelForCausalLM.from_config(twin_config, dtype=torch.float32, trust_remote_code=False)
    state = {"model." + k: v for k, v in whole.get_decoder().state_dict().items()}
    state.update({"lm_head." + k: v for k, v in whole.get_output_embeddings().state_dict().items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if "rotary" not in k] or unexpected:
        raise VerificationFailed(f"{folder}: the language model does not fit a {twin} text model ({missing[:2]}, "
                                 f"{unexpected[:2]})", "export with --format merged and report this model")
    del whole
    return model.eval()


def checkpoint_params(model: Any, names: list[str]) -> dict[str, Any]:
    """The loaded (text) model's parameters under the checkpoint's names ``names`` use (a multimodal one's
    language-model prefix), tied ones under each name."""
    from studio import multimodal

    where = multimodal.layout(names)
    return {multimodal.to_checkpoint(n, where): p for n, p in model.named_parameters(remove_duplicate=False)}


def check_gguf_llama(merged_dir: Path, gguf_path: Path, quant: str, new_tokens: int = 8,
                     source: str = "merged", trust: bool = False, weights: Any = None,
                     adapter_digest: str | None = None) -> Check:
    """Greedy text of the GGUF in llama.cpp itself == the merged model's in transformers (``GreedyCheck``)."""
    greedy_check = GreedyCheck(merged_dir, gguf_path, new_tokens, source, trust, weights, adapter_digest, quant)
    greedy_check.start()
    return greedy_check.finish()


class GreedyCheck:
    """Greedy text of the GGUF in llama.cpp itself == the merged model's in transformers, when llama.cpp
    is installed; otherwise skipped, saying so (the weights and vocabulary are checked anyway).

    llama.cpp answers each fixed prompt greedily; the merged model then reads the prompt and llama.cpp's
    answer in one forward pass (teacher forcing), and the answer is the merged model's own greedy answer
    when, at every position, its most likely next token is the one llama.cpp wrote (and, where
    llama.cpp ended the answer early, an end-of-turn token): one pass instead of a token-by-token
    generation. Where that pass cannot decide (a divergence, or a text that does not tokenise back into
    the same tokens, such as a UTF-8 character cut at the token cap), the merged model generates its
    own answer and the texts are compared; a divergence says where it happened and by how many logits
    the merged model preferred its own token (a near-tie is quantisation noise; a wide gap, a broken file).

    When no answer is the merged model's and the GGUF is quantised (``quant``), the merged model is given the
    GGUF's rounding (``add_gguf_rounding``: its quantised tensors read back) and reads llama.cpp's answers
    again: an answer it then writes itself is the quantisation's doing (a model whose next tokens are near
    ties, such as a random one), and the check passes when that explains every answer. A broken file (a
    wrong layout, a wrong hyper-parameter) is not explained by its own weights in transformers.

    In three steps, so that the waits overlap: created and ``start()``-ed once the GGUF is written (the
    prompts rendered, one llama.cpp process per prompt started), then the other checks run while
    llama.cpp answers, and ``finish()`` comes last. The merged model's answers depend only on the base
    weights, the adapter's files, the prompt and the library versions: the export cache keeps each one
    confirmed or generated, and each verdict on an answer that differs (llama.cpp answers a given file
    the same way every time), so the next export of the run (another quantisation, Ollama) needs no
    transformers at all when every answer is decided by them. Importing transformers on a thread while
    the GGUF is written was tried: the writer slowed down by as much as the import saved.

    ``weights`` (``merge.MergedWeights``): the merged model is the base loaded by transformers with the
    changed weights replaced by their merged values, when ``merged_dir`` holds no weight files;
    ``adapter_digest``: sha256 of the adapter those weights come from (None: ``merged_dir`` is the model).
    """

    def __init__(self, merged_dir: Path, gguf_path: Path, new_tokens: int = 8, source: str = "merged",
                 trust: bool = False, weights: Any = None, adapter_digest: str | None = None,
                 quant: str | None = None) -> None:
        self.merged_dir, self.gguf_path, self.new_tokens = Path(merged_dir), Path(gguf_path), new_tokens
        self.quant = quant
        self.source, self.trust, self.weights = source, trust, weights
        self.exe = llama_simple()
        self.procs: list = []
        if self.exe is None:
            return

        self.tok = tokenizer_for(self.merged_dir, trust)
        self.ids = verify.prompt_ids(self.tok)
        self.prompts = [self.tok.decode(without_added_bos(self.tok, prompt), skip_special_tokens=False)
                        for prompt in self.ids]
        base_dir = weights.base_dir if weights is not None else self.merged_dir
        self.key = cache.reference_key(base_dir, adapter_digest, self.ids, new_tokens)
        entry = cache.load("reference", self.key)
        value = entry["value"] if entry is not None else {}
        known, seen = value.get("answers"), value.get("verdicts")
        n = len(self.ids)
        known = known if isinstance(known, list) and len(known) == n else [None] * n
        seen = seen if isinstance(seen, list) and len(seen) == n else [{}] * n
        # per prompt: the merged model's own answer when known, and verdicts on llama.cpp answers it differs from
        self.known: list[str | None] = [a if isinstance(a, str) else None for a in known]
        self.seen: list[dict] = [dict(v) if isinstance(v, dict) else {} for v in seen]
        self.created = entry.get("created") if entry is not None else None

    @property
    def light(self) -> Any:
        """The folder's ``LightTokenizer`` when this check read one (the vocabulary check reuses it)."""

        tok = getattr(self, "tok", None)
        return tok if isinstance(tok, LightTokenizer) else None

    def start(self) -> None:
        """llama.cpp answers every prompt in its own process (each mostly loads the file, so they overlap)."""
        import os
        import subprocess

        if self.exe is None:
            return
        # The cores shared out between the runs: llama-simple has no thread option and starts 4 threads, and
        # with more threads than cores every step waits on a descheduled one (on 2 cores, 3 runs: 0.65 s at 4
        # threads each, 0.38 s at 1). A build with OpenMP (the default) honours the limit; idle threads sleep.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env = dict(os.environ, OMP_THREAD_LIMIT=str(max(1, cores // len(self.prompts))), OMP_WAIT_POLICY="PASSIVE")
        # read as bytes: a random model's answer can be bytes that are no UTF-8 (byte tokens), which a text
        # shows as U+FFFD and no tokenizer can read back (answer_bytes)
        self.procs = [subprocess.Popen([str(self.exe), "-m", str(self.gguf_path), "-n", str(self.new_tokens), prompt],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                      for prompt in self.prompts]

    def finish(self) -> Check:
        if self.exe is None:
            return Check("gguf_greedy", None, "skipped: llama.cpp is not installed (set LORA_STUDIO_LLAMA_CPP to its "
                                              "build folder to compare greedy answers in llama.cpp itself)")
        answers: list[str | None] = []
        failures: list[str] = []
        self.raw: list[bytes | None] = []
        try:
            for proc, prompt in zip(self.procs, self.prompts):
                out_b, err_b = proc.communicate(timeout=300)
                err = err_b.decode("utf-8", "replace")
                # llama-simple prints the prompt, the answer, then one newline
                head = prompt.encode("utf-8")
                raw = out_b.split(head, 1)[1] if proc.returncode == 0 and head in out_b else None
                raw = raw[:-1] if raw is not None and raw.endswith(b"\n") else raw
                self.raw.append(raw)
                # a piece can split a UTF-8 character: U+FFFD, as transformers decodes
                text = raw.decode("utf-8", "replace") if raw is not None else None
                answers.append(text)
                if text is None:
                    last = [line for line in err.strip().splitlines() if line.strip()][-1:]
                    failures.append(f"exit code {proc.returncode}" + (f": {last[0].strip()[:200]}" if last else ""))
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        verdicts = [self._from_cache(a, k, seen, self.quant) for a, k, seen in zip(answers, self.known, self.seen)]
        if self.quant and not any(v.get("identical") for v in verdicts):  # whether this file's rounding explains them
            verdicts = [{} if v.get("why") == "the export cache" and v.get("quant") != self.quant else v
                        for v in verdicts]
        origin = f"; reference answers from the export cache ({self.created})" if all(verdicts) else ""
        if not all(verdicts):
            base = self.weights.base_dir if self.weights is not None else self.merged_dir
            ok, why = verify.memory_ok(verify.model_bytes(base, 4))
            if not ok:
                return Check("gguf_greedy", None, f"skipped: the {self.source} model in float32 {why}")
            verdicts, note = self._teacher_forced(answers, verdicts)
            origin = note
        same = sum(bool(v["identical"]) for v in verdicts)
        rounded = sum(bool(not v["identical"] and v.get("rounding")) for v in verdicts)
        ties = sum("near_tie" in v for v in verdicts)
        unstable = sum(bool(v.get("unstable")) for v in verdicts)
        gaps = [v for v in verdicts if "gap" in v]
        worst = max(gaps, key=lambda v: v["gap"]) if gaps else None
        # One flip at a near-tie (quantisation noise) can change a short greedy answer; none matching is a broken
        # file, unless the merged model given the GGUF's own rounding writes every one of llama.cpp's answers.
        return Check("gguf_greedy", same > 0 or rounded == len(verdicts),
                     f"GGUF greedy text in llama.cpp ({self.exe.name}) vs {self.source} model: {same}/{len(self.ids)} "
                     f"prompts identical" + (f" (the widest divergence: token {worst['at'] + 1}, the {self.source} model "
                                             f"preferred its own by {worst['gap']:.3g} logits)" if worst else "")
                     + (f"; the GGUF's rounding explains {rounded} of the others (its quantised weights read "
                        f"back and given to the {self.source} model: {rounded - ties - unstable} answered as llama.cpp "
                        f"did, {ties} left its own answer at a near tie, by under {TIE_FACTOR:g}x the logits the "
                        f"rounding moves, {unstable} changed its own answer: greedy text cannot judge the file on "
                        f"those, the weights were checked tensor by tensor)" if rounded else "")
                     + (f"; llama.cpp failed on {len(failures)} prompt(s) ({failures[0]})" if failures else "")
                     + origin,
                     {"identical": same, "prompts": len(self.ids), "tokens_per_prompt": self.new_tokens,
                      "llama_cpp": str(self.exe), "per_prompt": verdicts})

    def _raw(self, i: int) -> bytes | None:
        raw = getattr(self, "raw", [])
        return raw[i] if i < len(raw) else None

    def _token_bytes(self) -> dict[bytes, list[int]]:
        """Every token's bytes (token_bytes), built once per check: only answers that are no UTF-8 need them."""
        if getattr(self, "_vocab", None) is None:
            self._vocab = token_bytes(self.tok)
        return self._vocab

    @staticmethod
    def _from_cache(answer: str | None, known: str | None, seen: dict, quant: str | None = None) -> dict:
        """The verdict on one llama.cpp answer from what the export cache holds, or {} when it cannot say.
        Whether the GGUF's rounding explains a divergent answer belongs to one quantisation (the writer gives
        the same file for it each time): a verdict on another one's rounding is judged again."""
        if answer is None:
            return {"identical": False, "why": "llama.cpp failed"}
        earlier = seen.get(answer)
        if known is not None:
            verdict = {"identical": answer == known}
        elif isinstance(earlier, dict) and "identical" in earlier:
            verdict = {"identical": bool(earlier["identical"])}
        else:
            return {}
        if not verdict["identical"] and isinstance(earlier, dict):
            same_file = earlier.get("quant") == quant
            verdict.update({k: earlier[k] for k in ("at", "gap", "rounding", "quant", "near_tie", "unstable") if k in earlier
                            and (same_file or k in ("at", "gap"))})
        return dict(verdict, why="the export cache")

    def _teacher_forced(self, answers: list[str | None], verdicts: list[dict]) -> tuple[list[dict], str]:
        """Judge the answers the cache cannot: one forward pass of the merged model each, and a greedy
        generation where that pass cannot decide; keep the merged model's answers in the export cache."""
        import torch


        release_freed_memory()  # the writer's buffers, before the model takes their place
        if self.weights is None:
            model = load_text_model(self.merged_dir, self.trust)
        else:
            model = merged_in_memory(self.weights, self.trust)
        # The prompts as transformers tokenises them (what training saw, and what the GGUF's pre-tokenizer
        # reproduces in llama.cpp): the light tokenizer reads tokenizer.json as it is, while transformers may
        # rebuild it by model class (Qwen3.5 splits every digit from the space before it).
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(self.merged_dir), trust_remote_code=self.trust)
        ends = _turn_end_ids(self.tok, self.merged_dir)
        out, known, seen = [], list(self.known), [dict(v) for v in self.seen]
        self.exact: dict[int, list[int]] = {}  # llama.cpp's own tokens, where its text cannot be read back
        for i, (prompt, text, verdict) in enumerate(zip(verify.prompt_ids(self.tok), answers, verdicts)):
            raw = self._raw(i)
            if not verdict and text is not None and raw is not None and not _utf8(raw):
                followed = follow_bytes(model, self._token_bytes(), prompt, raw, self.new_tokens, ends)
                if followed is not None:
                    self.exact[i] = followed["ids"]
                    verdict = ({"identical": True} if followed["at"] is None else
                               {"identical": False, "at": followed["at"], "gap": followed["gap"]})
                    if verdict["identical"]:
                        known[i] = text
            if not verdict and text is not None:  # the cache cannot judge it (a failed run is judged already)
                cont = self.tok(text, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logits = model(torch.tensor([prompt + cont]), logits_to_keep=len(cont) + 1).logits[0]
                best = logits.argmax(-1).tolist()
                if _follows(best, cont, self.new_tokens, ends) and self.tok.decode(cont, skip_special_tokens=False) == text:
                    verdict, known[i] = {"identical": True}, text
                else:
                    diverged = self._diverged(logits, best, cont, text, ends)
                    if diverged is None:  # the pass cannot tell a divergence from a text tokenised another way
                        verdict, known[i] = self._generated(model, prompt, text, cont, ends)
                    else:
                        verdict = diverged
            out.append(verdict)
        if self.quant and not any(v.get("identical") for v in out):
            self._with_rounding(model, answers, out)
        for i, (text, verdict) in enumerate(zip(answers, out)):
            if text is not None and not verdict.get("identical") and (verdict.get("why") != "the export cache"
                                                                    or "rounding" in verdict):
                # llama.cpp's answers are deterministic: the same file gives the same answer again
                seen[i] = dict(list(seen[i].items())[-7:], **{text: verdict})
        del model
        why = cache.save("reference", self.key, {"answers": known, "verdicts": seen})
        return out, (f"; the reference answers could not be kept: {why}" if why else "")

    def _with_rounding(self, model: Any, answers: list[str | None], verdicts: list[dict]) -> None:
        """Judge each divergent answer again with the GGUF's rounding given to the merged model (in place):
        explained when the rounded model writes it itself, when it leaves the merged model's answer at a near
        tie, by fewer logits than twice what the rounding moves them (``_within_rounding``), or when the
        rounding alone changes the merged model's own answer in transformers (``unstable``): greedy text cannot
        judge a file on such a prompt (a random model's), which the weight check has judged tensor by tensor."""
        import torch

        texts = {i: a for i, (a, v) in enumerate(zip(answers, verdicts)) if a is not None and not v.get("identical")}
        if not texts or not self.quant:
            return
        todo = sorted(texts)
        prompts = verify.prompt_ids(self.tok)
        exact = getattr(self, "exact", {})
        conts = {i: exact.get(i) or self.tok(texts[i], add_special_tokens=False)["input_ids"] for i in todo}

        def forced(i: int) -> Any:  # teacher forcing on llama.cpp's answer
            with torch.no_grad():
                return model(torch.tensor([prompts[i] + conts[i]]), logits_to_keep=len(conts[i]) + 1).logits[0]

        done = 0
        ends = _turn_end_ids(self.tok, self.merged_dir)
        if self.quant not in UNROUNDED:
            before = {i: forced(i) for i in todo}
            own = {i: self._generated(model, prompts[i], texts[i], conts[i], ends)[1] for i in todo}
            try:
                done, _left = add_gguf_rounding(model, self.merged_dir, self.gguf_path, self.quant, self.weights)
            except (OSError, ValueError, KeyError):  # a file the weight check fails anyway: no rounding to give
                done = 0
        if not done:  # nothing quantised (f16): no rounding explains a divergence
            for i in todo:
                verdicts[i] = dict(verdicts[i], quant=self.quant, rounding=False)
            return
        for i in todo:
            cont, after = conts[i], forced(i)
            follows = _follows(after.argmax(-1).tolist(), cont, self.new_tokens, ends) and \
                self.tok.decode(cont, skip_special_tokens=False) == texts[i]
            rounded_own = texts[i]
            if i in exact:  # bytes that are no UTF-8: whether the rounded model writes them itself
                raw = self._raw(i)
                again = follow_bytes(model, self._token_bytes(), prompts[i], raw, self.new_tokens, ends) if raw else None
                follows = again is not None and again["at"] is None
            elif not follows:  # or the same text tokenised another way: the rounded model's own answer decides
                generated, rounded_own = self._generated(model, prompts[i], texts[i], cont, ends)
                follows = generated["identical"]
            verdict = dict(verdicts[i], quant=self.quant, rounding=follows)
            tie = None if follows else _within_rounding(before[i], after, cont)
            if tie is not None and i not in exact and \
                    "\ufffd" in self.tok.decode(cont[:tie["at"] + 1], skip_special_tokens=False):
                tie = None  # a cut UTF-8 character: the tokens read back from the text are not llama.cpp's
            if tie is not None:
                verdict.update(rounding=True, near_tie=tie)
            elif not follows and rounded_own != own[i]:
                verdict.update(rounding=True, unstable=True)
            verdicts[i] = verdict

    def _diverged(self, logits: Any, best: list[int], cont: list[int], text: str, ends: set[int]) -> dict | None:
        """Where the merged model's greedy answer leaves llama.cpp's, when the forward pass proves it: the
        model's preferred token is not how llama.cpp's text goes on. None when it could be the same text
        tokenised another way (the preferred token's text starts the rest, or a UTF-8 character is cut)."""
        j = next((k for k, (b, t) in enumerate(zip(best, cont)) if b != t), len(cont))
        done = self.tok.decode(cont[:j], skip_special_tokens=False)
        if not text.startswith(done):
            return None
        if j == len(cont):  # every token followed; llama.cpp ended the turn where the model goes on (or past the cap)
            if len(cont) >= self.new_tokens or not ends:
                return None
            row = logits[j]
            return {"identical": False, "at": j, "gap": float(row[best[j]] - max(row[e] for e in ends))}
        piece = self.tok.decode([best[j]], skip_special_tokens=False)
        if not piece or "\ufffd" in piece or "\x00" in piece or text[len(done):].startswith(piece):
            return None  # (a NUL byte: llama-simple prints nothing of it, so the text cannot show it)
        return {"identical": False, "at": j, "gap": float(logits[j, best[j]] - logits[j, cont[j]])}

    def _generated(self, model: Any, prompt: list[int], text: str, cont: list[int], ends: set[int]) -> tuple[dict, str]:
        """The merged model's own greedy answer, stopping where llama.cpp stops (an end-of-turn token)."""
        import torch

        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)
        with torch.no_grad():
            gen = model.generate(torch.tensor([prompt]), max_new_tokens=self.new_tokens, do_sample=False,
                                 eos_token_id=sorted(ends) or None, pad_token_id=pad, output_scores=True,
                                 return_dict_in_generate=True)
        own = gen.sequences[0, len(prompt):].tolist()
        while own and own[-1] in ends:
            own.pop()
        answer = printed(self.tok, own)
        if answer == text:
            return {"identical": True, "generated": True}, answer
        at = next((j for j, (a, b) in enumerate(zip(own, cont)) if a != b), min(len(own), len(cont)))
        verdict: dict = {"identical": False, "at": at}
        if at < len(gen.scores) and at < len(cont) and at < len(own):
            row = gen.scores[at][0]
            verdict["gap"] = float(row[own[at]] - row[cont[at]])
        return verdict, answer


# ggml multiplies a quantised weight by activations it rounds to 8 bits in blocks as well (Q8_0 / Q8_K): the
# rounding of the weights alone, which the merged model is given, moves the logits about half as far
TIE_FACTOR = 2.0


def _within_rounding(before: Any, after: Any, cont: list[int]) -> dict | None:
    """Where the merged model (``before``: its teacher-forced logits on llama.cpp's tokens ``cont``) first
    prefers another token than llama.cpp wrote: the margin it prefers it by, and the largest logit change the
    GGUF's rounding causes up to there (``after``: the rounded model's logits on the same tokens). A near tie,
    returned, when the margin is under TIE_FACTOR times that change; None for a decided token."""
    best = before.argmax(-1).tolist()
    j = next((k for k, (b, t) in enumerate(zip(best, cont)) if b != t), None)
    if j is None:
        return None
    gap = float(before[j, best[j]] - before[j, cont[j]])
    shift = float((after[:j + 1] - before[:j + 1]).abs().max())
    return {"at": j, "gap": round(gap, 4), "shift": round(shift, 4)} if gap <= TIE_FACTOR * shift else None


def token_bytes(tok: Any) -> dict[bytes, list[int]]:
    """Each token's bytes as llama.cpp prints it -> the token ids that print them. Byte-level BPE vocabularies
    (GPT-2's byte-to-character map) and SentencePiece ones (``▁`` for a space, ``<0xNN>`` byte tokens)."""
    import json

    decoder = json.loads(tok.backend_tokenizer.to_str()).get("decoder") or {}
    kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders") or []}
    chars = _byte_level_chars() if "ByteLevel" in kinds else None
    out: dict[bytes, list[int]] = {}
    for piece, i in tok.get_vocab().items():
        if chars is not None and all(c in chars for c in piece):
            data = bytes(chars[c] for c in piece)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            data = bytes([int(piece[3:5], 16)])
        else:
            data = piece.replace("\u2581", " ").encode("utf-8")
        out.setdefault(data, []).append(i)
    return out


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _byte_level_chars() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: the printable bytes stand for themselves, the other 68
    (controls, space, and a few Latin-1 ones) for the characters from U+0100 on, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in out.values():
            out[chr(256 + extra)] = b
            extra += 1
    return out


def follow_bytes(model: Any, vocab: dict[bytes, list[int]], prompt: list[int], data: bytes, n: int,
                 ends: set[int]) -> dict | None:
    """Teacher forcing on the bytes llama.cpp printed, for an answer that is no UTF-8 (its text cannot be
    tokenised back). Step by step, the token the model writes is the most likely one whose bytes go on the
    answer; where its most likely token does not, that is where it leaves llama.cpp's answer, by the gap
    between the two. ``{"ids", "at", "gap"}`` (``at`` None: the model writes the answer itself, stopping
    where it stops), or None when no token goes on the bytes (a piece with a NUL byte: printf cut it).
    ``vocab``: ``token_bytes(tokenizer)``, built once by the caller."""
    import torch

    longest = max((len(b) for b in vocab), default=1)
    ids: list[int] = []
    pos, at, gap = 0, None, 0.0
    while True:
        with torch.no_grad():
            row = model(torch.tensor([prompt + ids])).logits[0, -1].float()
        best = int(row.argmax())
        if pos >= len(data) or len(ids) >= n:  # the answer is over: the model must stop here too
            if len(ids) < n and ends and best not in ends and at is None:
                at, gap = len(ids), float(row[best] - max(row[e] for e in ends))
            break
        fits = [(t, k) for k in range(1, min(longest, len(data) - pos) + 1) for t in vocab.get(data[pos:pos + k], [])]
        if not fits:
            return None
        chosen, size = max(fits, key=lambda f: float(row[f[0]]))
        if chosen != best and at is None:
            at, gap = len(ids), float(row[best] - row[chosen])
        ids.append(chosen)
        pos += size
    return {"ids": ids, "at": at, "gap": round(gap, 4)}


def printed(tok: Any, ids: list[int]) -> str:
    """Token ids as text the way llama-simple prints them: each piece through C's ``printf("%s")``, which ends
    at a NUL byte, so a token that decodes to NUL shows nothing (a random model's answer can hold one)."""
    return tok.decode([t for t in ids if "\x00" not in tok.decode([t], skip_special_tokens=False)],
                      skip_special_tokens=False)


def _follows(best: list[int], cont: list[int], n: int, ends: set[int]) -> bool:
    """Teacher forcing decided it: at every position the most likely next token (``best``, one per
    position from the last prompt token on) is the one written next, and the answer stops where a
    greedy generation of ``n`` tokens stops (the token cap, or a token that ends the turn)."""
    if best[:len(cont)] != cont:
        return False
    return len(cont) == n or (len(cont) < n and best[len(cont)] in ends)


def _turn_end_ids(tok: Any, folder: Path) -> set[int]:
    """Tokens that end a turn: the tokenizer's EOS and the generation config's (llama.cpp stops on them)."""
    import json

    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    try:
        eos = json.loads((Path(folder) / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, ValueError):
        eos = None
    ids.update([eos] if isinstance(eos, int) else [i for i in (eos or []) if isinstance(i, int)])
    return ids


def tokenizer_for(folder: Path, trust: bool = False) -> Any:
    """The folder's tokenizer for the fixed prompts: ``tokenizers`` + jinja2 (no transformers) when it has a
    tokenizer.json (tests/test_light_tokenizer.py checks both render and tokenise alike), else transformers'."""

    if LightTokenizer.can_read(folder):
        return LightTokenizer(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)


_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
UNROUNDED = ("f16", "bf16", "f32")  # quantisations whose files hold no quantised tensor


def _checkpoint_view(params: dict[str, Any], name: str, shape: tuple[int, ...]) -> Any:
    """The part of the loaded model's parameters that holds checkpoint tensor ``name`` (of ``shape``), as a
    writable view, or None. Transformers may fuse a checkpoint's experts into one parameter on load
    (``experts.E.gate_proj`` and ``up_proj`` as halves of ``experts.gate_up_proj[E]``; ``down_proj[E]``)."""
    import re

    p = params.get(name)
    if p is not None:
        return p.data if tuple(p.shape) == tuple(shape) else None
    m = re.fullmatch(r"(.*\.experts)\.(\d+)\.(gate|up|down)_proj\.weight", name)
    if m is None:
        return None
    prefix, e, part = m.group(1), int(m.group(2)), m.group(3)
    fused = params.get(f"{prefix}.{'down_proj' if part == 'down' else 'gate_up_proj'}")
    if fused is None or fused.dim() != 3 or e >= fused.shape[0]:
        return None
    w = fused.data[e]
    if part == "down":
        return w if tuple(w.shape) == tuple(shape) else None
    half = w.shape[0] // 2
    if w.shape[0] % 2 or (half, w.shape[1]) != tuple(shape):
        return None
    return w[:half] if part == "gate" else w[half:]


def add_gguf_rounding(model: Any, folder: Path, gguf_path: Path, quant: str, weights: Any = None) -> tuple[int, int]:
    """Give the merged model in memory the rounding of the GGUF's quantised tensors: each one read back
    (dequantised by the gguf package), its difference from the model's own weight put back into the
    checkpoint's layout (the writer's row and column orders undone) and added. What the model then answers
    is what the GGUF's weights answer, up to llama.cpp's arithmetic, so a divergence it reproduces is the
    quantisation's, not the file's. The linear layers' inputs are rounded as ggml's dot products round them and
    the attention's keys and values as llama.cpp's F16 cache holds them. Returns (tensors given their rounding, quantised tensors left as they
    are: built from several checkpoint tensors, or held by no parameter of the loaded model)."""
    import json

    import numpy as np
    import torch
    from gguf.quants import dequantize

    from studio.export.arches import text_config
    from studio.export.gguf_writer import check_supported, oriented, permuted, plan_tensors

    config = text_config(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")))
    arch = check_supported(config)
    metas = weights.metas() if weights is not None else None
    plan = plan_tensors(Path(folder), config, arch, quant, metas=metas)
    params = checkpoint_params(model, [m.name for m in (metas if metas is not None else [p.meta for p in plan if p.meta])])
    stored = {t.name: t for t in gguf_reader(gguf_path).tensors}
    done = left = 0
    kinds: dict[int, str] = {}  # where each rounded weight's storage starts -> its GGUF type
    with torch.no_grad():
        for p in plan:
            t = stored.get(p.gguf_name)
            if t is None or t.tensor_type.name in _FLOAT_TYPES:
                continue
            sources = p.experts or ([p.meta] if p.meta is not None and p.derived is None else [])
            views = [_checkpoint_view(params, m.name, tuple(m.shape)) for m in sources]
            if not sources or any(v is None for v in views):
                left += 1
                continue
            current = torch.stack([v.float() for v in views]) if p.experts else views[0].float()
            ref = oriented(p, current, config, arch).float()
            got = torch.from_numpy(np.ascontiguousarray(dequantize(np.asarray(t.data), t.tensor_type))).float()
            if got.numel() != ref.numel():
                left += 1
                continue
            delta = got.reshape(ref.shape) - ref  # in the GGUF's layout: undo its column, then its row order
            order = arch.col_order(p.gguf_name, int(ref.shape[-1]), config) if arch.col_order is not None else None
            if order is not None:
                back = torch.empty_like(delta)
                back[..., torch.as_tensor(order, dtype=torch.long)] = delta
                delta = back
            if not p.experts and delta.dim() >= 1:
                rows = torch.as_tensor(permuted(p, np.arange(delta.shape[0]), config, arch), dtype=torch.long)
                back = torch.empty_like(delta)
                back[rows] = delta
                delta = back
            for v, d in zip(views, delta if p.experts else [delta]):
                v.add_(d.reshape(v.shape).to(v.dtype))
                kinds[v.data_ptr()] = t.tensor_type.name
            done += 1
    # ggml multiplies a quantised weight by the activations rounded to 8 bits as well: the same on the inputs
    # of the linear layers that hold one (experts fused by transformers are not layers: their weights only)
    for name, module in model.named_modules():
        kind = kinds.get(module.weight.data_ptr()) if isinstance(module, torch.nn.Linear) else None
        if kind is not None:
            module.register_forward_pre_hook(lambda _m, args, kind=kind: (round_activations(args[0], kind), *args[1:]))
        # llama.cpp keeps keys and values in an F16 cache (llama-simple's default): the values exactly as the
        # projection gives them, the keys after their norm and rotation, here before (close: the same rounding)
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("k_proj", "v_proj"):
            module.register_forward_hook(lambda _m, _args, out: out.half().float().to(out.dtype))
    return done, left


def round_activations(x: Any, weight_type: str) -> Any:
    """``x`` (activations, blocks along the last axis) as ggml's CPU backend rounds them before a dot product
    with a weight of ``weight_type``: Q8_0 (blocks of 32, an f16 scale) for Q8_0, Q4_0, Q5_0/1 and MXFP4
    weights, Q8_K (blocks of 256, the largest magnitude at -127, a float scale) for the K-quants."""
    import torch

    block = 256 if weight_type.endswith("_K") else 32
    if x.shape[-1] % block:
        return x
    b = x.float().reshape(*x.shape[:-1], -1, block)
    if block == 32:
        d = b.abs().amax(-1, keepdim=True) / 127
        q = torch.where(d > 0, _roundf(b / torch.where(d > 0, d, 1)), 0).clamp(-127, 127)
        d = d.half().float()  # rounded with the exact scale, stored with an f16 one (quantize_row_q8_0)
    else:  # the signed value of largest magnitude maps to -127 (quantize_row_q8_K)
        at = b.abs().argmax(-1, keepdim=True)
        big = b.gather(-1, at)
        d = -big / 127
        q = torch.where(big != 0, _roundf(b / torch.where(big != 0, d, 1)), 0).clamp(max=127)
    return (q * d).reshape(x.shape).to(x.dtype)


def _roundf(t: Any) -> Any:
    """C's roundf (halves away from zero), as ggml rounds; torch.round rounds halves to even."""
    import torch

    return torch.sign(t) * torch.floor(t.abs() + 0.5)


def llama_mtmd_cli() -> Path | None:
    """llama.cpp's multimodal command line (``llama-mtmd-cli``), found as ``llama_simple`` finds its tool."""
    return llama_tool("llama-mtmd-cli")


MTMD_PROMPT = "What colours do you see?"


def processor_image_tokens(folder: Path, image: Any) -> int:
    """How many image tokens the checkpoint's processor gives ``image`` (a PIL image): what its language
    model reads in place of the picture."""
    from studio import vision

    processor = vision.load_processor(Path(folder))
    text = vision.render(processor, vision.part_messages([{"role": "user", "content": vision.IMAGE + MTMD_PROMPT}]),
                         add_generation_prompt=True)
    ids = processor(text=[text], images=[image], add_special_tokens=False)["input_ids"][0]
    soft = getattr(processor.tokenizer, "image_token_id", None)  # as vision.encode_vision_example counts them
    soft = soft if isinstance(soft, int) else getattr(processor, "image_token_id", None)
    return sum(1 for t in ids if t == soft)


def check_mtmd(base_dir: Path, gguf_path: Path, mmproj_path: Path, new_tokens: int = 4) -> Check:
    """The language model's GGUF and the projector file in llama.cpp's ``llama-mtmd-cli``: both load, a drawn
    picture is encoded (the log's image token count, beside the processor's for the same picture) and tokens
    are generated greedily. llama.cpp resizes pictures its own way, so the counts and the answer may differ from
    transformers'; the projector's tensors were compared one by one (``mmproj.check_mmproj``)."""
    import re
    import subprocess
    import tempfile

    from studio.export import mmproj

    exe = llama_mtmd_cli()
    if exe is None:
        return Check("mtmd", None, "skipped: llama.cpp's llama-mtmd-cli is not installed (set LORA_STUDIO_LLAMA_CPP "
                                   "to a build with it to run the GGUF and its projector file on a picture)")
    import json

    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    image = verify.probe_image("squares")
    want = processor_image_tokens(base_dir, image)
    with tempfile.TemporaryDirectory(prefix="lora-studio-mtmd-") as folder:
        png = Path(folder) / "probe.png"
        image.save(png)
        argv = [str(exe), "-m", str(gguf_path), "--mmproj", str(mmproj_path), "--image", str(png), "-p", MTMD_PROMPT,
                "-n", str(new_tokens), "--temp", "0", "-t", "2", "-c", "512", "--no-warmup", "-v"]  # -v: the log counts the image tokens
        if mmproj.projector_type(config) != "gemma3" and want:  # Qwen-VL: the processor's grid, as far as it goes
            argv += ["--image-min-tokens", str(want), "--image-max-tokens", str(want)]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return Check("mtmd", False, f"llama-mtmd-cli did not answer within 300 s ({exe})")
    log = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    got = sum(int(n) for n in re.findall(r"decoding image batch \d+/\d+, n_tokens_batch = (\d+)", log))
    answer = proc.stdout.decode("utf-8", "replace").strip()
    ok = proc.returncode == 0 and got > 0
    last = [line.strip() for line in log.splitlines() if line.strip()][-1:] or [""]
    summary = (f"llama.cpp ({exe.name}) loads the GGUF and the projector file, encodes a drawn picture as {got} image "
               f"tokens (the processor: {want}) and answers {answer[-60:]!r}" if ok else
               f"llama.cpp ({exe.name}) failed on the GGUF and its projector file (exit code {proc.returncode}: "
               f"{last[0][:200]})")
    return Check("mtmd", ok, summary, {"image_tokens": got, "processor_image_tokens": want, "answer": answer[-200:],
                                       "returncode": proc.returncode, "llama_cpp": str(exe)})
