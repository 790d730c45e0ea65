"""Attack class: chat templates that never end, grow without bound or refuse rows; LoRA pairs that do
not add up (ranks that disagree, shapes unlike the base) or overflow when merged.

Every render goes through studio.data.chat_render (sandbox, size limits, deadline); chat, export,
evaluate and download workers end with the process that started them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from faultkit import cli, fake_run_with_adapter

from studio.data.chat_render import SECONDS_ENV, TemplateError, TemplateRunaway, render_source
from studio.export.errors import UnsupportedModel, VerificationFailed
from studio.export.targets import export
from studio.procs import worker_env

NEVER_ENDS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
KEY = "base_model.model.model.layers.0.self_attn.q_proj"


def _with_template(tmp_path: Path, model_dir: Path, template: str) -> Path:
    base = shutil.copytree(model_dir, tmp_path / "base")
    cfg_path = base / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    (base / "chat_template.jinja").write_text(template)
    return base


def _where():
    return "T.jinja"


@pytest.mark.parametrize("template", [
    NEVER_ENDS,
    "{% set s = range(100000)|join %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
])
def test_a_template_that_never_ends_is_stopped_with_its_file_named(monkeypatch, template):
    monkeypatch.setenv(SECONDS_ENV, "1")
    start = time.monotonic()
    with pytest.raises(TemplateRunaway, match=r"did not finish in 1 s \(T\.jinja\)"):
        render_source(template, _where, messages=[])
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("template", [
    "{{ 'x' * 10**10 }}", "{{ 9 ** 999999999 }}", "{{ (messages * 1000000000)|length }}",
    "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
    "{{ 'a'|center(10**10) }}", "{{ 'a'.ljust(10**10) }}", "{{ '{:>9999999999}'.format('a') }}",
    "{{ '%9999999999s' % 'a' }}", "{{ 'a'|indent(10**10, true) }}",
])
def test_a_template_that_grows_without_bound_is_refused_before_it_takes_the_memory(template):
    start = time.monotonic()
    with pytest.raises(TemplateRunaway, match=r"\(T\.jinja\) builds a text or list of more than"):
        render_source(template, _where, messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 5


def _peak_mib(fn) -> float:
    """Peak Python memory (MiB) while ``fn`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def test_a_filter_with_constant_arguments_is_not_run_while_compiling(monkeypatch):
    """jinja's optimizer folded ``[1]|batch(N, 'x')|list`` into the compiled code, outside the deadline
    and the size limits (2.3 GB and 7.5 s for N = 3,000,000); now filters run only while rendering."""
    monkeypatch.setenv(SECONDS_ENV, "5")
    template = '{% set x = [1]|batch(100000, "x")|list %}{{ x|length }} {{ x[0]|length }}'
    out = []
    peak = _peak_mib(lambda: out.append(render_source(template, _where, messages=[])))
    assert out == ["1 100000"]
    assert peak < 16, f"{peak:.0f} MiB: the filter was folded into the compiled code"  # was 77 MiB


def test_compiling_a_template_counts_against_the_deadline(monkeypatch):
    monkeypatch.setenv(SECONDS_ENV, "0.2")
    template = "{% if a %}{{ b }}{% endif %}" * 3000 + "{# compile-deadline #}"  # about a second to compile
    with pytest.raises(TemplateRunaway, match=r"did not finish in 0\.2 s \(T\.jinja\)"):
        render_source(template, _where, messages=[])


SMALL_LIMIT = 1 << 20  # the tests lower MAX_TEXT so that every attack stays a few MB


@pytest.mark.parametrize("template", [
    "{% set s = 'x' * 2000 %}{% set y = s|replace('x', s) %}{{ y|length }}",
    "{% set y = range(1000)|list|join('y' * 5000) %}{{ y|length }}",
    "{% set y = ('y' * 5000).join(range(1000)|map('string')) %}{{ y|length }}",
    "{{ [1, [2, [3, [4]]]]|tojson(indent=400000)|length }}",
    "{{ [1, [2, [3, [4]]]]|tojson(400000)|length }}",
    "{{ ('\t' * 1000).expandtabs(5000)|length }}",
    "{{ ('a ' * 50000)|wordwrap(1, wrapstring='y' * 100)|length }}",
    "{{ ('%s' * 1000)|format(*(['x' * 5000] * 1000))|length }}",
    "{{ (('%(a)s' * 1000) % {'a': 'x' * 5000})|length }}",
    "{{ ('{0}' * 1000).format('x' * 5000)|length }}",
    "{{ ('{0}' * 1000).format_map({'0': 'x' * 5000})|length }}",
    "{{ ('%999999s' * 50)|format(*(['a'] * 50))|length }}",
    "{{ [1]|batch(5000000, 'x')|first|length }}",
    "{{ ('\"' * 300000)|escape|length }}",
    "{{ (['x' * 5000] * 1000)|string|length }}",
    "{{ ['x' * 5000] * 1000 }}",
    "{{ (['x' * 5000] * 1000)|pprint|length }}",
    "{{ ((['x' * 5000] * 1000)|list ~ '')|length }}",
    "{{ lipsum(10000)|length }}",
])
def test_every_filter_result_is_checked_and_the_expanders_are_estimated_before_they_run(monkeypatch, template):
    """Filters used to skip the size limit: ``s|replace('x', s)`` built 1.6e9 characters and rendered
    "fine". Each attack here would build 4-20 times the (lowered) limit: it must be refused before
    the text exists, so the peak stays under twice the limit."""
    from studio.data import chat_render

    monkeypatch.setattr(chat_render, "MAX_TEXT", SMALL_LIMIT)
    render_source("{{ 1 }}", _where, messages=[])  # jinja's own imports and set-up are not the attack's
    seen = []

    def render():
        with pytest.raises(TemplateRunaway, match=r"\(T\.jinja\) builds a text or list of more than 1,048,576"):
            render_source(template, _where, messages=[])
        seen.append(True)

    peak = _peak_mib(render)
    assert seen
    assert peak < 2, f"refused only after {peak:.1f} MiB"  # the attacks build 5 MiB or more


def test_sum_of_lists_is_one_pass_not_one_uninterruptible_quadratic_call(monkeypatch):
    """``([l]*700)|sum(start=[])`` with l of 10,000 items took 25.7 s in one C call on a 2 s deadline."""
    monkeypatch.setenv(SECONDS_ENV, "10")
    template = "{% set l = range(2000)|list %}{{ ([l] * 1000)|sum(start=[])|length }} {{ [[1], [2]]|sum(start=[0]) }}"
    start = time.monotonic()
    assert render_source(template, _where, messages=[]) == "2000000 [0, 1, 2]"
    assert time.monotonic() - start < 3  # was about 10 s on this machine (quadratic)


@pytest.mark.parametrize("template, words", [
    ("{{ strftime_now('%c' * 100000)|length }}", r"passes strftime_now a format of 200,000 characters"),
    ("{{ (range(100000)|list * 50)|sort|length }}", r"sorts 5,000,000 items"),
    ("{% set s = 'x' * 100000 %}{{ ([s ~ 'a', s ~ 'b'] * 5000)|sort|length }}", r"sorts 10,000 items of up to"),
    ("{% set s = 'x' * 100000 %}{{ ([s ~ 'a', s ~ 'b'] * 5000)|unique|list|sort|length }}", None),
])
def test_single_c_calls_the_deadline_cannot_stop_are_bounded_before_they_start(template, words):
    """A sort or a strftime is one C call: an exception from the watchdog waits until it returns
    (``strftime_now('%c' * 30000000)`` took 58 s and 3.8 GB); their inputs are bounded instead."""
    if words is None:
        assert render_source(template, _where, messages=[]) == "2"  # small sorts still work
        return
    with pytest.raises(TemplateRunaway, match=r"\(T\.jinja\) " + words):
        render_source(template, _where, messages=[])


def test_real_templates_still_render_with_the_guarded_filters():
    template = ("{% for m in messages %}{{ m.role|upper }}: {{ m.content|trim|replace('a', 'b') }}"
                "{{ m|tojson(indent=2)|length > 0 }} {{ '%s-%d'|format('x', 3) }} {{ [3, 1, 2]|sort|join(',') }}"
                "{{ messages|map(attribute='role')|join('|') }} {{ '{0}:{1}'.format(1, 2) }}"
                "{{ '%s' % 'p' }} {{ strftime_now('%Y')|length }}{% endfor %}")
    out = render_source(template, _where, messages=[{"role": "user", "content": " a "}])
    assert out == "USER: bTrue x-3 1,2,3user 1:2p 4"


@pytest.mark.parametrize("template", ["{{ messages.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                                      "{{ messages.append(1) }}"])
def test_the_sandbox_refuses_python_internals_and_mutation(template):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(TemplateError, match="SecurityError"):
        render_source(template, _where, messages=msgs)
    assert msgs == [{"role": "user", "content": "hi"}]


def test_a_refusal_only_with_the_generation_prompt_is_found_by_data_inspect(tmp_path, tiny_model_dir, chat_jsonl):
    from studio.data import inspect

    base = _with_template(tmp_path, tiny_model_dir, (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}{{ raise_exception('no generation prompt here') }}{% endif %}"))
    report = inspect(chat_jsonl, tokenizer=str(base))
    assert report.usable == 0 and report.problems
    p = report.problems[0]
    assert p.code == "template" and p.line == 1
    assert "the chat template refused this conversation: no generation prompt here" in p.message


def test_training_says_the_template_refused_every_row_with_its_message_and_line(tmp_path, tiny_model_dir,
                                                                                chat_jsonl):
    from faultkit import tiny_recipe

    from studio.data import DataError
    from studio.data.light_tokenizer import LightTokenizer
    from studio.train.dataset import build

    base = _with_template(tmp_path, tiny_model_dir, "{{ raise_exception('this model takes no chats') }}")
    recipe = tiny_recipe(base, chat_jsonl)
    with pytest.raises(DataError) as e:
        build(LightTokenizer(base), recipe)
    msg = str(e.value)
    assert "refused every training example" in msg and "this model takes no chats" in msg
    assert "line " in msg and "raise the sequence length" not in msg


def test_data_inspect_stops_on_a_template_that_never_ends_and_names_its_file(tmp_path, tiny_model_dir,
                                                                             chat_jsonl):
    base = _with_template(tmp_path, tiny_model_dir, NEVER_ENDS)
    env = {**worker_env(), SECONDS_ENV: "2"}
    exe = Path(sys.executable).with_name("lora-studio")
    r = subprocess.run([str(exe), "data", "inspect", str(chat_jsonl), "--model", str(base)], capture_output=True,
                       text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "did not finish in 2 s" in out and str(base / "chat_template.jinja") in out
    assert "Traceback" not in out


HOSTILE = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31m\u202etxt.exe\U000e0041"


@pytest.mark.parametrize("json_out", [False, True])
def test_escape_sequences_in_a_template_refusal_reach_the_terminal_only_as_visible_escapes(tmp_path, tiny_model_dir,
                                                                                          chat_jsonl, json_out):
    """``raise_exception('\\x1b]0;…')`` used to set the terminal's title and clear the screen on every
    problem line of ``data inspect``; the error line of the CLI printed user text raw too."""
    base = _with_template(tmp_path, tiny_model_dir, "{{ raise_exception('" + HOSTILE + "') }}")
    data = tmp_path / "chat\x1b[2J.jsonl"
    shutil.copy(chat_jsonl, data)
    r = cli("data", "inspect", str(data), "--model", str(base), *(["--json"] if json_out else []))
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "refused this conversation" in out
    for raw in ("\x1b", "\x07", "\u202e", "\U000e0041"):
        assert raw not in out
    if json_out:
        report = json.loads(r.stdout)
        assert HOSTILE in report["problems"][0]["message"]  # the values are kept, spelled as JSON escapes
    else:
        assert "\\x1b]0;PWNED-TITLE\\x07\\x1b[2J" in r.stdout and "\\u202etxt.exe" in r.stdout
        assert "chat\\x1b[2J.jsonl: no usable rows" in r.stderr


def test_the_cli_error_line_shows_escape_sequences_visibly(tmp_path):
    r = cli("data", "inspect", str(tmp_path / ("no\x1b[2Jsuch\u202e.jsonl")))
    assert r.returncode == 2
    assert "\x1b" not in r.stderr and "\u202e" not in r.stderr
    assert "no\\x1b[2Jsuch\\u202e.jsonl" in r.stderr


def test_ollama_export_names_the_template_that_never_ends(tmp_path, tiny_model_dir, monkeypatch):
    from studio.export.errors import ConfigError

    monkeypatch.setenv(SECONDS_ENV, "1")
    base = _with_template(tmp_path, tiny_model_dir, NEVER_ENDS)
    run_dir = fake_run_with_adapter(tmp_path, base)
    with pytest.raises(ConfigError, match=r"did not finish in 1 s \(.*chat_template\.jinja\)"):
        export(run_dir, "ollama", quant="f16")


def test_a_worker_whose_cli_is_killed_does_not_keep_spinning(tmp_path, tiny_model_dir):
    base = _with_template(tmp_path, tiny_model_dir, NEVER_ENDS)
    run_dir = fake_run_with_adapter(tmp_path, base)
    env = {**worker_env(), SECONDS_ENV: "300"}
    exe = Path(sys.executable).with_name("lora-studio")
    cli_proc = subprocess.Popen([str(exe), "export", str(run_dir), "--format", "ollama", "--quant", "f16"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        worker = _spinning_worker(cli_proc.pid, "workers.export")
        os.kill(cli_proc.pid, 9)
        cli_proc.wait(10)
        gone, alive = psutil.wait_procs([worker], timeout=5)
        assert not alive, "the export worker kept running after its CLI was killed"
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()


def _spinning_worker(cli_pid: int, module: str, timeout: float = 120) -> psutil.Process:
    """The worker child of ``cli_pid`` once it has spent 3 s of CPU (in the template: nothing else takes that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(cli_pid).children(recursive=True):
            try:
                if module in " ".join(child.cmdline()) and sum(child.cpu_times()[:2]) > 3 + _startup_cpu:
                    return child
            except psutil.Error:
                pass
        time.sleep(0.2)
    raise AssertionError(f"no {module} worker started")


_startup_cpu = 12  # CPU seconds a worker spends importing torch and reading the run before it renders


def test_lora_pairs_with_ranks_that_disagree_are_refused_for_every_format(tmp_path, tiny_model_dir):
    import torch

    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    run_dir = fake_run_with_adapter(tmp_path, base, {f"{KEY}.lora_A.weight": torch.zeros(2, 64),
                                                     f"{KEY}.lora_B.weight": torch.zeros(64, 3)})
    for fmt in ("adapter", "merged", "gguf"):
        with pytest.raises(UnsupportedModel, match=r"disagrees on its rank: .*lora_A.weight is 2x64 and "
                                                   r".*lora_B.weight is 64x3"):
            export(run_dir, fmt)


def test_lora_pairs_unlike_the_base_weight_are_refused_even_for_the_adapter_format(tmp_path, tiny_model_dir):
    import torch

    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    run_dir = fake_run_with_adapter(tmp_path, base, {f"{KEY}.lora_A.weight": torch.zeros(2, 32),
                                                     f"{KEY}.lora_B.weight": torch.zeros(64, 2)})
    with pytest.raises(UnsupportedModel, match=r"updates a 64x32 weight, but the base weight .*q_proj.weight is 64x64"):
        export(run_dir, "adapter")


def test_finite_weights_that_overflow_when_merged_are_named_as_an_overflow(tmp_path, tiny_model_dir):
    import torch

    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    run_dir = fake_run_with_adapter(tmp_path, base, {f"{KEY}.lora_A.weight": torch.full((2, 64), 1e30),
                                                     f"{KEY}.lora_B.weight": torch.full((64, 2), 1e30)})
    with pytest.raises(VerificationFailed, match=r"merged tensor .*q_proj.weight overflows") as e:
        export(run_dir, "merged")
    assert "check the training" in e.value.hint


def test_an_infinite_lora_alpha_is_named(tmp_path, tiny_model_dir):
    from studio.export.errors import ConfigError

    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    run_dir = fake_run_with_adapter(tmp_path, base)
    cfg_path = run_dir / "adapter" / "adapter_config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"lora_alpha": 4', '"lora_alpha": 1e999'))
    with pytest.raises(ConfigError, match=r"adapter_config.json: lora_alpha / r .* is inf"):
        export(run_dir, "merged")


def test_export_cli_prints_no_traceback_for_a_rank_mismatch(tmp_path, tiny_model_dir):
    import torch

    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    run_dir = fake_run_with_adapter(tmp_path, base, {f"{KEY}.lora_A.weight": torch.zeros(2, 64),
                                                     f"{KEY}.lora_B.weight": torch.zeros(64, 3)})
    r = cli("export", str(run_dir), "--format", "merged")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "disagrees on its rank" in out and "Traceback" not in out


def test_a_template_file_of_many_megabytes_is_refused_before_compiling():
    start = time.monotonic()
    with pytest.raises(TemplateRunaway, match=r"\(T\.jinja\) is 5,000,000 characters long"):
        render_source("x" * 5_000_000, _where, messages=[])
    assert time.monotonic() - start < 1
