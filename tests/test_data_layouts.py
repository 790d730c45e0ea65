"""The layouts real files use: tool calls, Alpaca history, content parts, labels, media, role mapping,
preference pairs, unused columns, and suggestions that work when applied. Fixtures: tests/fixtures/data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny

from studio.data import DataError, inspect, load_examples
from studio.data.template import IGNORE, encode_example, fallback_messages, tool_support

FIX = Path(__file__).parent / "fixtures" / "data"
END = "<|im_end|>"

# A ChatML template that writes tools, tool calls and tool results (Qwen/Hermes style), for the mask tests.
TOOLS_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n' }}{% endif %}"
    "{{ 'Tools:\\n' }}{% for t in tools %}{{ t | tojson + '\\n' }}{% endfor %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' and tools %}"
    "{% elif m['role'] == 'assistant' and m.tool_calls %}{{ '<|im_start|>assistant\\n' }}"
    "{% if m['content'] %}{{ m['content'] + '\\n' }}{% endif %}"
    "{% for c in m.tool_calls %}{{ '<tool_call>' + ({'name': c.function.name, 'arguments': c.function.arguments}"
    " | tojson) + '</tool_call>' }}{% endfor %}{{ '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    tiny.make_tokenizer(out)
    return out


def _tok(tok_dir: Path, template: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = template
    return tok


def _trained_texts(tok, enc: dict) -> list[str]:
    runs, cur = [], []
    for i, lab in zip(enc["input_ids"], enc["labels"]):
        if lab != IGNORE:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return [tok.decode(r) for r in runs + ([cur] if cur else [])]


# ------------------------------------------------------------------ tool calling

def test_openai_tool_calls_are_kept_as_template_messages():
    r = inspect(FIX / "tools_openai.jsonl", preview_rows=10)
    assert (r.format, r.usable, r.skipped, r.tool_rows) == ("messages", 4, 0, 4)
    first, parallel, ends_on_call, legacy = (p["messages"] for p in r.preview)
    assert [m["role"] for m in first] == ["system", "user", "assistant", "tool", "assistant"]
    assert first[2]["tool_calls"][0]["function"] == {"name": "clock", "arguments": {"city": "Lima"}}
    assert [c["function"]["name"] for c in parallel[1]["tool_calls"]] == ["convert", "clock"]
    assert parallel[1]["content"] == "Checking both."
    assert ends_on_call[-1]["role"] == "assistant" and ends_on_call[-1]["tool_calls"]  # not "no assistant turn"
    assert legacy[1]["tool_calls"][0]["function"]["arguments"] == {"amount": 5, "to": "MXN"}
    assert legacy[2] == {"role": "tool", "content": "86 MXN", "name": "convert"}
    assert r.preview[2]["tools"][0]["function"]["name"] == "clock"  # the tools column as JSON text
    assert any("use tools" in n for n in r.notes)


def test_sharegpt_function_call_and_observation():
    r = inspect(FIX / "tools_sharegpt.json", preview_rows=10)
    assert (r.format, r.usable, r.skipped) == ("sharegpt", 2, 1)
    msgs = r.preview[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[2]["tool_calls"][0]["function"] == {"name": "clock", "arguments": {"city": "Oslo"}}
    assert r.preview[0]["tools"] == [{"type": "function", "function": json.loads(
        json.dumps({"name": "clock", "description": "Current time in a city", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}))}]
    (bad,) = [p for p in r.problems if p.severity == "error"]
    assert (bad.row, bad.code, bad.field) == (3, "tool_call", "conversations[1].value")


def test_tool_calls_carry_the_loss_with_a_tools_template(tok_dir):
    tok = _tok(tok_dir, TOOLS_TEMPLATE)
    assert tool_support(tok)
    example = load_examples(FIX / "tools_openai.jsonl")[0][1]  # two parallel calls, two results, the answer
    enc = encode_example(tok, example, seq_len=4096)
    text = tok.apply_chat_template(example["messages"], tools=example["tools"], tokenize=False)
    assert enc["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    call = ('Checking both.\n<tool_call>{"name": "convert", "arguments": {"amount": 20, "to": "JPY"}}</tool_call>'
            '<tool_call>{"name": "clock", "arguments": {"city": "Osaka"}}</tool_call>' + END)
    assert _trained_texts(tok, enc) == [call, "20 euro is 3240 yen; it is 17:05 in Osaka." + END]
    untrained = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE])
    assert "3240 JPY" in untrained and '"name": "convert", "description"' in untrained  # results, schema: context


def test_a_conversation_ending_in_a_tool_call_trains_the_call(tok_dir):
    tok = _tok(tok_dir, TOOLS_TEMPLATE)
    example = load_examples(FIX / "tools_openai.jsonl")[0][2]
    enc = encode_example(tok, example, seq_len=4096)
    assert _trained_texts(tok, enc) == ['<tool_call>{"name": "clock", "arguments": {"city": "Quito"}}</tool_call>'
                                        + END]


def test_template_without_tools_support_gets_the_documented_fallback(tok_dir):
    tok = _tok(tok_dir, tiny.CHATML)
    assert not tool_support(tok)
    example = load_examples(FIX / "tools_openai.jsonl")[0][0]
    enc = encode_example(tok, example, seq_len=4096)
    trained = _trained_texts(tok, enc)
    assert trained == ['<tool_call>\n{"name": "clock", "arguments": {"city": "Lima"}}\n</tool_call>' + END,
                       "It is 09:40 in Lima." + END]
    msgs = fallback_messages(example["messages"], example["tools"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[0]["content"].startswith("You help travellers.\n\nYou can call these tools.")
    assert msgs[3]["content"] == "<tool_response>\n09:40\n</tool_response>"
    r = inspect(FIX / "tools_openai.jsonl", tokenizer=tok)
    assert any("has no tools support" in n for n in r.notes) and r.tokens.count == 4
    assert any(t == "<" and m for t, m in r.mask_view)  # the token view shows the trained call


# ------------------------------------------------------------------ history, parts, labels, media, roles

def test_alpaca_history_becomes_the_earlier_turns_in_order():
    r = inspect(FIX / "alpaca_history.jsonl", preview_rows=10)
    assert (r.format, r.usable, r.skipped) == ("alpaca", 3, 1)
    assert [(m["role"], m["content"]) for m in r.preview[0]["messages"]] == [
        ("user", "How much flour for one loaf?"), ("assistant", "About 500 grams."),
        ("user", "And water?"), ("assistant", "Roughly 350 millilitres."),
        ("user", "Thanks, and how long should it rest?"), ("assistant", "Let the dough rest for an hour.")]
    assert [m["role"] for m in r.preview[2]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    (bad,) = r.problems
    assert (bad.row, bad.code, bad.field) == (4, "history", "history[0]")
    assert r.unused_columns == {}


def test_content_parts_joined_remote_images_refused_and_audio_named(tmp_path):
    r = inspect(FIX / "content_parts.jsonl", preview_rows=10)
    assert r.preview[0]["messages"][0]["content"] == "Describe a sunrise."
    assert (r.usable, r.skipped) == (1, 2)
    # image parts are kept now (vision training), but an image on the network is never fetched
    codes = {(p.row, p.code, p.field) for p in r.problems}
    assert codes == {(2, "image_remote", "messages[0].content"), (3, "image_remote", "messages[0].content")}
    assert "http://x/cat.png" in r.problems[0].message and "network" in r.problems[0].message
    assert "download the image" in r.problems[0].hint
    audio = tmp_path / "audio.jsonl"
    audio.write_text(json.dumps({"messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "..."}},
                                     {"type": "text", "text": "What is said?"}]},
        {"role": "assistant", "content": "Hello."}]}) + "\n", encoding="utf-8")
    heard = inspect(audio, preview_rows=1)
    assert heard.usable == 1 and heard.preview[0]["messages"][0]["content"] == "What is said?"
    assert [(p.row, p.code) for p in heard.problems] == [(1, "media_audio")]
    assert "1 row(s) carry audio; the audio are not used (training reads text and images only)" in heard.notes
    value = inspect(FIX / "content_parts_value.jsonl")
    assert value.usable == 2 and value.preview[0]["messages"][1]["content"] == "Shwmae!"


def test_label_column_filters_rows_marked_bad_by_default():
    r = inspect(FIX / "kto_label.jsonl", preview_rows=10)
    assert (r.label_column, r.label_filter, r.usable, r.filtered, r.rows) == ("label", True, 3, 2, 5)
    assert [p["messages"][1]["content"] for p in r.preview] == ["Rome.", "4", "The Pacific."]
    assert any("2 row(s) marked bad are left out" in n for n in r.notes)
    everything = inspect(FIX / "kto_label.jsonl", label_filter=False)
    assert (everything.usable, everything.filtered) == (5, 0)
    assert any("label filter is off" in n for n in everything.notes)
    tags = inspect(FIX / "tag_messages.jsonl")
    assert (tags.label_column, tags.usable, tags.filtered) == ("tag", 2, 1)
    assert load_examples(FIX / "kto_label.jsonl")[1].filtered == 2  # training takes the same path


def test_a_file_of_rows_marked_bad_says_so(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b", "label": false}\n' * 3, encoding="utf-8")
    with pytest.raises(DataError, match="all 3 rows are marked bad by the 'label' column.*--label-filter off"):
        load_examples(path)


def test_images_kept_when_present_and_missing_ones_are_row_errors(tmp_path):
    r = inspect(FIX / "images_sharegpt.json", preview_rows=10)  # the fixture's images are not there
    assert (r.usable, r.skipped, r.images) == (1, 3, 0)
    missing = [(p.row, p.code, p.field) for p in r.problems]
    assert missing == [(1, "image_missing", "images"), (2, "image_missing", "images[0]"),
                       (3, "image_missing", "images")]
    assert r.problems[0].message == f"image file {FIX / 'cars' / '1.jpg'} does not exist"
    assert r.column_map["images"] == "images" and r.media_columns == {} and "images" not in r.unused_columns
    with pytest.raises(DataError, match="no usable rows out of 2.*bridge.jpg does not exist"):
        load_examples(FIX / "images_only.json")
    from PIL import Image

    copy = tmp_path / "images_sharegpt.json"
    copy.write_bytes((FIX / "images_sharegpt.json").read_bytes())
    (tmp_path / "cars").mkdir()
    for name in ("cars/1.jpg", "a.jpg", "b.jpg", "bridge.jpg"):
        Image.new("RGB", (4, 3), "red").save(tmp_path / name, "JPEG")
    r = inspect(copy, preview_rows=10)
    assert (r.usable, r.skipped, r.images) == (4, 0, 4)
    assert r.preview[0]["messages"][0]["content"] == "<image>\nWhat colour is the car?"
    assert r.preview[0]["images"] == [str(tmp_path / "cars" / "1.jpg")]
    assert r.preview[1]["messages"][0]["content"] == "<image><image>Which picture is brighter?"
    assert r.preview[1]["images"] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert r.preview[2]["messages"][0]["content"] == "<image>" and r.preview[2]["image_sizes"] == [[4, 3]]
    assert "images" not in r.preview[3]  # the row with an empty list is a text row


def test_role_values_mapped():
    plain = inspect(FIX / "roles_custom.jsonl")
    assert plain.usable == 0 and "--roles bing=ROLE" in plain.problems[0].hint
    assert plain.suggestions[0] == {"format": "sharegpt", "columns": {},
                                    "roles": {"bard": "assistant", "bing": "assistant"}}
    r = inspect(FIX / "roles_custom.jsonl", roles={"bing": "assistant", "BARD": "assistant"}, preview_rows=5)
    assert (r.usable, r.skipped) == (3, 0)
    assert [m["role"] for m in r.preview[2]["messages"]] == ["user", "assistant"]
    assert r.roles == {"bing": "assistant", "BARD": "assistant", "bard": "assistant"}
    with pytest.raises(DataError, match="--roles bing=robot"):
        inspect(FIX / "roles_custom.jsonl", roles={"bing": "robot"})


# ------------------------------------------------------------------ preference pairs

@pytest.mark.parametrize("name, rows, pairs, layout", [
    ("pref_prompt.jsonl", 3, 3, "prompt + chosen + rejected"),
    ("pref_conversations.json", 2, 2, "conversations + chosen + rejected"),
    ("pref_openai.jsonl", 2, 2, "preferred/non-preferred outputs after 'input'"),
    ("pref_ranking.json", 2, 3, "a ranked 'output' list, best first, after 'instruction'"),
    ("pref_implicit.jsonl", 2, 2, "chosen + rejected conversations (shared prompt)"),
    ("pref_full_conversations.jsonl", 2, 2, "prompt + chosen + rejected"),
])
def test_preference_pairs_recognised_and_counted(name, rows, pairs, layout):
    r = inspect(FIX / name, preview_rows=10)
    assert (r.format, r.usable, r.skipped) == ("preference", rows, 0)
    assert r.preference == {"layout": layout, "pairs": pairs}
    note = next(n for n in r.notes if n.startswith("preference data"))
    assert f"{pairs} pair(s)" in note and "SFT trains on the chosen answers" in note
    for ex in r.preview:
        assert ex["messages"][-1]["role"] == "assistant" and ex["rejected"]
        assert any(m["role"] == "user" for m in ex["messages"][:ex["prompt_len"]])


def test_whole_conversations_in_chosen_do_not_repeat_the_prompt():
    r = inspect(FIX / "pref_full_conversations.jsonl", preview_rows=5)
    assert r.preview[0]["messages"] == [{"role": "user", "content": "Name a fruit that is yellow."},
                                        {"role": "assistant", "content": "A banana."}]
    assert r.unused_columns == {"prompt_id": 2, "messages": 2, "score_chosen": 2, "score_rejected": 2}


def test_system_question_response_and_structured_tool_results():
    r = inspect(FIX / "system_question_response.jsonl", preview_rows=5)
    assert (r.format, r.usable, r.column_map["system"], r.unused_columns) == (
        "question_answer", 2, "system_prompt", {"id": 2})
    assert r.preview[0]["messages"][0] == {"role": "system", "content": "You are a careful tutor."}
    tool = load_examples(FIX / "tools_structured_result.jsonl")[0][0]["messages"][2]
    assert tool == {"role": "tool", "content": '{"temp_c": 21, "sky": "clear"}'}


def test_preference_sides_are_right():
    ex = load_examples(FIX / "pref_conversations.json")[0][1]
    assert ex["messages"] == [{"role": "system", "content": "Be concise."},
                              {"role": "user", "content": "Opposite of hot?"},
                              {"role": "assistant", "content": "Cold."}]
    assert ex["rejected"] == [[{"role": "assistant", "content": "Warm, maybe, or something else entirely."}]]
    ranked = load_examples(FIX / "pref_ranking.json")[0][1]
    assert ranked["messages"][0]["content"] == "Complete the phrase.\n\nAn apple a day"
    assert [r[0]["content"] for r in ranked["rejected"]] == ["is red.", "falls."]
    hh = load_examples(FIX / "pref_implicit.jsonl")[0][1]
    assert hh["messages"] == [{"role": "user", "content": "Can you recommend a board game?"},
                              {"role": "assistant", "content": "Try Carcassonne."}]
    assert hh["rejected"] == [[{"role": "assistant", "content": "No."}]] and hh["prompt_len"] == 1


# ------------------------------------------------------------------ nothing dropped unnamed

def test_unknown_columns_and_turn_keys_are_named():
    r = inspect(FIX / "extra_columns.jsonl")
    assert r.unused_columns == {"id": 3, "source": 2, "score": 1, "lang": 1}
    assert "column(s) not used: id (3 row(s)), source (2 row(s)), score (1 row(s)), lang (1 row(s))" in r.notes
    (w,) = r.problems
    assert (w.row, w.code, w.field) == (2, "unused_key", "messages[].weight")


def _fields(record):
    """Every column of a record (top level)."""
    return {str(k) for k in record} if isinstance(record, dict) else set()


@pytest.mark.parametrize("path", sorted(p for p in FIX.iterdir() if p.suffix in (".jsonl", ".json")
                                        and "utf16" not in p.name and "bom" not in p.name and p.name != "broken.jsonl"))
def test_every_column_is_read_or_named(path):
    """The rule: no field the file carries is dropped without being named in the report."""
    try:
        r = inspect(path)
    except DataError as e:
        assert getattr(e, "suggestions", None) or "no known format" in str(e) or "turns have keys" in str(e)
        return
    if r.format == "text":
        return
    named = set(r.column_map.values()) | set(r.unused_columns) | set(r.media_columns)
    named |= {r.label_column} if r.label_column else set()
    for line in path.read_text(encoding="utf-8").splitlines() if path.suffix == ".jsonl" else []:
        assert _fields(json.loads(line)) <= named, path.name
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        for record in data if isinstance(data, list) else []:
            assert _fields(record) <= named, path.name


# ------------------------------------------------------------------ suggestions

def _suggestions(path: Path) -> list[dict]:
    try:
        return inspect(path).suggestions
    except DataError as e:
        return getattr(e, "suggestions", None) or []


def test_every_suggestion_works_when_applied():
    offered = {}
    for path in sorted(FIX.iterdir()):
        if path.name.startswith("_"):
            continue
        for s in _suggestions(path):
            offered.setdefault(path.name, []).append(s)
            r = inspect(path, s["format"], s["columns"], roles=s.get("roles"))
            assert r.usable > 0 and r.usable * 2 >= r.rows, (path.name, s)
    # the layouts that need a mapping get one, and it names sensible fields
    assert offered["speaker_turns.jsonl"][0] == {"format": "messages", "columns": {
        "messages": "dialog", "role": "speaker", "content": "utterance"},
        "roles": {"agent": "assistant", "customer": "user"}}
    assert offered["source_target.csv"][0] == {"format": "prompt_completion",
                                               "columns": {"prompt": "source", "completion": "target"}}
    assert offered["roles_custom.jsonl"][0] == {"format": "sharegpt", "columns": {},
                                                "roles": {"bard": "assistant", "bing": "assistant"}}
    assert "images_only.json" not in offered  # nothing maps an image-only file into usable text


def test_unusable_layout_error_carries_the_working_mapping():
    with pytest.raises(DataError) as e:
        inspect(FIX / "source_target.csv")
    assert "this works: --format prompt_completion --columns prompt=source,completion=target" in str(e.value)


# ------------------------------------------------------------------ command line and training path

def test_cli_roles_and_label_filter(capsys):
    from studio.cli import main

    assert main(["data", "inspect", str(FIX / "roles_custom.jsonl"), "--json"]) == 2
    capsys.readouterr()
    assert main(["data", "inspect", str(FIX / "roles_custom.jsonl"), "--roles", "bing=assistant,bard=assistant",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["usable"], d["roles"]) == (3, {"bing": "assistant", "bard": "assistant"})
    assert main(["data", "inspect", str(FIX / "kto_label.jsonl"), "--label-filter", "off", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["usable"], d["filtered"], d["label_column"], d["label_filter"]) == (5, 0, "label", False)
    assert main(["data", "inspect", str(FIX / "roles_custom.jsonl"), "--roles", "bing"]) == 2
    assert "--roles: 'bing' is not ROLE=" in capsys.readouterr().err
    assert main(["data", "inspect", str(FIX / "tools_sharegpt.json")]) == 0
    out = capsys.readouterr().out
    assert 'assistant: → clock({"city": "Oslo"})' in out and "use tools" in out


def test_recipe_roles_and_label_filter_reach_training(tmp_path):
    from studio.recipe import Recipe
    from studio.train.dataset import build

    recipe = Recipe()
    recipe.data.path, recipe.data.roles, recipe.data.val_fraction = str(FIX / "roles_custom.jsonl"), {
        "bing": "assistant", "bard": "assistant"}, 0.0
    tok = tiny.make_tokenizer(tmp_path / "tok")
    data = build(tok, recipe)
    assert len(data.train) == 3
    recipe.data.path, recipe.data.roles = str(FIX / "kto_label.jsonl"), {}
    assert len(build(tok, recipe).train) == 3
    recipe.data.label_filter = False
    assert len(build(tok, recipe).train) == 5
    recipe.data.path = str(FIX / "tools_openai.jsonl")
    data = build(tok, recipe)
    assert len(data.train) == 4 and any("no tools support" in n for n in data.report.notes)


def test_odd_values_anywhere_are_row_problems_not_crashes():
    """Every fixture layout with values swapped for other JSON kinds: each row is judged, none raises."""
    import copy
    import random

    from studio.data.formats import FORMATS
    from studio.data.report import DatasetReport
    from studio.data.scan import Sink, _row_options, _sample, detect, judge, role_mapping
    from studio.data.sources import Record, open_source, records

    kinds = [None, 1, 2.5, True, [], {}, "", "x", "<image>", ["a"], [{"a": 1}], {"type": "image"},
             [{"type": "text"}], "[1", "{}", [[1, 2]], [["a"]], {"role": "user"}]
    rng = random.Random(13)

    def mutate(v):
        if rng.random() < 0.15:
            return copy.deepcopy(rng.choice(kinds))
        if isinstance(v, dict):
            return {k: mutate(x) for k, x in v.items()}
        return [mutate(x) for x in v] if isinstance(v, list) else v

    judged = 0
    for path in sorted(p for p in FIX.iterdir() if p.suffix in (".json", ".jsonl") and "utf16" not in p.name):
        src = open_source(path)
        sample = _sample(records(src))
        try:
            det = detect(sample, "auto", {}, path)
        except DataError:
            continue
        dicts = [r.value for r in sample if isinstance(r.value, dict)]
        report = DatasetReport()
        colmap = {**det.colmap, **_row_options(det, dicts, role_mapping({"bing": "assistant"}), True, report)}
        sink = Sink(report, 0, True, colmap)
        for n in range(200):
            judge(Record(n + 1, None, mutate(rng.choice(dicts)), None), FORMATS[det.format], colmap, sink)
            judged += 1
    assert judged > 4000
