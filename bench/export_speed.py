"""Wall time and peak RSS of LoRA Studio's GGUF writer (f16, q8_0, q4_k_m) on one model folder,
and of llama.cpp's own tools on the same folder when a llama.cpp checkout is given.

    python bench/export_speed.py                          # the demo model (SmolLM2-135M-Instruct)
    python bench/export_speed.py --model DIR              # any merged model folder GGUF export supports
    python bench/export_speed.py --llama-cpp ~/llama.cpp  # also convert_hf_to_gguf.py (+ llama-quantize)

Each conversion runs in a fresh subprocess, so its peak RSS (ru_maxrss from wait4) is its own, and
with a data folder of its own (``WORK/home``, never the user's): the rows of our writer alone start
with an empty export cache, so they include reading the tokenizer with transformers.
llama.cpp's converter writes f16 and q8_0 itself; its q4_k_m is convert (f16) + ``llama-quantize``,
timed together, and measured only when a built ``llama-quantize`` is found in the checkout
(build/bin, bin or the top folder). Without ``--llama-cpp`` those rows are skipped. The converter
needs llama.cpp's Python requirements (its ``requirements/requirements-convert_hf_to_gguf.txt``,
e.g. mistral_common); a PYTHONPATH you set is passed on to the converter only: ours run with the
repository alone on theirs (with the converter's requirements importable, transformers imports some of
them and our export measured 23 MiB and 0.5 s more).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUANTS = ("f16", "q8_0", "q4_k_m")


def child(model: Path, out: Path, quant: str) -> None:
    """One export with the studio's writer, timed from the first tensor read (imports excluded);
    quant "none" only imports, for the baseline RSS of the interpreter with its libraries."""
    import gguf  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401

    from studio.export.gguf_writer import write_gguf

    if quant == "none":
        print(json.dumps({"seconds": 0.0}))
        return
    start = time.perf_counter()
    write_gguf(model, out, quant, name=model.name)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def full_child(run: Path, out: Path, quant: str) -> None:
    """The whole export a user runs (checks, merge, GGUF, verification), timed from the first step;
    the verification's share is the time from the first 'verify' progress to the end."""
    from studio.export import export

    start, marks = time.perf_counter(), {}

    def progress(phase: str, done: int, total: int) -> None:
        marks.setdefault(phase, time.perf_counter())

    result = export(run, "gguf", quant, out=out, progress=progress)
    end = time.perf_counter()
    verify_s = end - marks.get("verify", end)
    print(json.dumps({"seconds": end - start, "verify_s": verify_s,
                      "checks": {c["name"]: c["ok"] for c in result.checks}}), flush=True)
    from workers import exit_now

    exit_now(0)  # ends as the export worker ends (the wall time includes the process's exit)


def measure(argv: list[str], env: dict) -> dict:
    """Wall time and peak RSS of ``argv``, run under a small intermediate interpreter that runs only
    that command, so its RUSAGE_CHILDREN peak is that command's own (this process may be large)."""
    wrapper = [sys.executable, __file__, "--measure", json.dumps(argv)]
    proc = subprocess.run(wrapper, capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def _measure_main(argv: list[str]) -> None:
    import resource

    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        print(f"{Path(argv[1] if len(argv) > 1 else argv[0]).name} failed (exit {proc.returncode}): "
              + " | ".join(tail), file=sys.stderr)
        raise SystemExit(1)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    inner = {}
    for line in reversed(proc.stdout.decode(errors="replace").splitlines()):
        try:
            inner = json.loads(line)
            break
        except ValueError:
            continue
    print(json.dumps({"wall_s": wall, "peak_rss_mb": rss, **(inner if isinstance(inner, dict) else {})}))


# The export cache (studio.export.cache) as each timed export finds it: what transformers would compute
# is either there or not. "first": empty (a model never exported before); "new run": the tokenizer's
# vocabulary kept, the merged model's reference answers not (the first export of a run on a known
# base); "again": both kept (another export of the same run).
CACHE_STATES = ("first", "new run", "again")


def whole_export_vs_converter(run: Path, model: Path, llama: Path | None, work: Path, env: dict, repeat: int,
                              rows: list) -> None:
    """The whole export (merge, GGUF, verification) of f16 and q8_0 against the converter on the same
    merged weights, alternating run by run, for each state of the export cache; medians, and the issue's
    targets judged on them. The exports use a data folder of their own (``work/home``), never the user's."""
    import statistics

    convert = llama / "convert_hf_to_gguf.py" if llama is not None else None
    have_convert = convert is not None and convert.is_file()
    lenv = converter_env(env, llama) if have_convert else env
    home = work / "home"
    env = dict(env, LORA_STUDIO_HOME=str(home))
    exports = home / "cache" / "export"
    for q in ("f16", "q8_0"):
        ours: dict[str, list] = {state: [] for state in CACHE_STATES}
        theirs = []
        for _ in range(repeat):
            for state in CACHE_STATES:
                if state == "first":
                    shutil.rmtree(exports, ignore_errors=True)
                elif state == "new run":
                    shutil.rmtree(exports / "reference", ignore_errors=True)
                out = work / f"export-{q}"
                shutil.rmtree(out, ignore_errors=True)
                ours[state].append(measure([sys.executable, __file__, "--full-child", str(run), str(out), q], env))
            if have_convert:
                theirs.append(measure([sys.executable, str(convert), str(model), "--outtype", q,
                                       "--outfile", str(work / f"llama-{q}.gguf")], lenv))
        conv = [r for r in theirs if "error" not in r]
        cw = statistics.median(r["wall_s"] for r in conv) if conv else None
        cr = statistics.median(r["peak_rss_mb"] for r in conv) if conv else None
        if conv:
            rows.append(("llama.cpp convert (median)", q, {"wall_s": cw, "peak_rss_mb": cr}, work / f"llama-{q}.gguf"))
        elif theirs:
            print(f"converter failed: {theirs[-1]['error']}")
        for state in CACHE_STATES:
            good = [r for r in ours[state] if "error" not in r]
            if not good:
                rows.append((f"lora-studio export ({state})", q, ours[state][-1], work / f"export-{q}" / f"model-{q}.gguf"))
                continue
            med = {k: statistics.median(r[k] for r in good) for k in ("wall_s", "peak_rss_mb", "verify_s")}
            rows.append((f"lora-studio export ({state})", q, med, work / f"export-{q}" / f"model-{q}.gguf"))
            share = med["verify_s"] / med["wall_s"]
            line = (f"whole export {q}, cache '{state}' (median of {len(good)}): {med['wall_s']:.1f} s, verification "
                    f"{med['verify_s']:.1f} s ({share:.0%}; target <= 25% {'met' if share <= 0.25 else 'MISSED'}); "
                    f"checks {good[-1]['checks']}")
            if conv:
                t, m = med["wall_s"] / cw, med["peak_rss_mb"] / cr
                line += (f"; converter {cw:.1f} s -> {t:.2f}x (target <= 1.5x {'met' if t <= 1.5 else 'MISSED'}); "
                         f"peak RSS {med['peak_rss_mb']:.0f} vs {cr:.0f} MiB -> {m:.2f}x "
                         f"(target <= 1.0x {'met' if m <= 1.0 else 'MISSED'})")
            print(line)


def converter_env(env: dict, llama: Path) -> dict:
    """The converter's environment: llama.cpp's own gguf-py first, then the PYTHONPATH the bench was given."""
    paths = [str(llama / "gguf-py")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return dict(env, PYTHONPATH=os.pathsep.join(paths))


def find_quantize(llama_dir: Path) -> Path | None:
    for rel in ("build/bin/llama-quantize", "bin/llama-quantize", "llama-quantize", "build/bin/quantize"):
        if (llama_dir / rel).is_file() and os.access(llama_dir / rel, os.X_OK):
            return llama_dir / rel
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a merged model folder (default: the demo model)")
    parser.add_argument("--llama-cpp", type=Path, help="a llama.cpp source checkout, to compare with its converter")
    parser.add_argument("--work", type=Path, help="where to write the GGUFs (default: a temp folder, removed after)")
    parser.add_argument("--run", type=Path, help="a trained run folder: also time the whole export (merge, GGUF, "
                                                 "verification) of f16 and q8_0, as a user runs it, with the export "
                                                 "cache empty, holding the vocabulary, and holding everything; the "
                                                 "greedy check in llama.cpp runs when LORA_STUDIO_LLAMA_CPP is set")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --run and --llama-cpp: run the whole export (in each cache state) and the converter "
                             "this many times, alternating, and judge the targets on the medians")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "OUT", "QUANT"), help=argparse.SUPPRESS)
    parser.add_argument("--full-child", nargs=3, metavar=("RUN", "OUT", "QUANT"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return
    if args.full_child:
        full_child(Path(args.full_child[0]), Path(args.full_child[1]), args.full_child[2])
        return
    if args.measure:
        _measure_main(json.loads(args.measure))
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if args.model:
        model = args.model.resolve()
    else:
        sys.path.insert(0, str(ROOT))
        from studio.demo import ensure_demo_model

        model = ensure_demo_model()
    from studio.safetensors_io import model_tensors

    params = sum(m.nbytes for m in model_tensors(model))
    largest = max(m.nbytes for m in model_tensors(model))
    print(f"model: {model} ({params / 2**20:.0f} MiB of weights, largest tensor {largest / 2**20:.0f} MiB)")
    work = args.work or Path(tempfile.mkdtemp(prefix="export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env["LORA_STUDIO_HOME"] = str(work / "home")
    rows = []
    try:
        base = measure([sys.executable, __file__, "--child", str(model), str(work / "none.gguf"), "none"], env)
        print(f"baseline: the interpreter with torch, numpy and gguf imported peaks at "
              f"{base.get('peak_rss_mb', float('nan')):.0f} MiB")
        for q in QUANTS:
            shutil.rmtree(work / "home" / "cache" / "export", ignore_errors=True)
            out = work / f"studio-{q}.gguf"
            r = measure([sys.executable, __file__, "--child", str(model), str(out), q], env)
            rows.append(("lora-studio", q, r, out))
        llama = args.llama_cpp.expanduser().resolve() if args.llama_cpp else None
        if llama is None:
            print("llama.cpp: not given (--llama-cpp DIR); its rows are skipped")
        elif not (llama / "convert_hf_to_gguf.py").is_file():
            print(f"llama.cpp: {llama} has no convert_hf_to_gguf.py; its rows are skipped")
        else:
            lenv = converter_env(env, llama)
            for q in ("f16", "q8_0"):
                out = work / f"llama-{q}.gguf"
                r = measure([sys.executable, str(llama / "convert_hf_to_gguf.py"), str(model), "--outtype", q,
                             "--outfile", str(out)], lenv)
                rows.append(("llama.cpp convert", q, r, out))
            quantize = find_quantize(llama)
            f16 = work / "llama-f16.gguf"
            if quantize is None:
                print(f"llama.cpp: no built llama-quantize in {llama}; its q4_k_m row is skipped")
            elif not f16.is_file():
                print("llama.cpp: its f16 conversion failed, so its q4_k_m row is skipped")
            else:
                out = work / "llama-q4_k_m.gguf"
                r = measure([str(quantize), str(f16), str(out), "Q4_K_M"], lenv)
                conv = next(x[2] for x in rows if x[0] == "llama.cpp convert" and x[1] == "f16")
                if "error" not in r and "error" not in conv:
                    r = {"wall_s": r["wall_s"] + conv["wall_s"], "peak_rss_mb": max(r["peak_rss_mb"], conv["peak_rss_mb"])}
                rows.append(("llama.cpp convert+quantize", "q4_k_m", r, out))
        if args.run:
            whole_export_vs_converter(args.run.resolve(), model, llama, work, env, max(1, args.repeat), rows)
        print(f"{'tool':<28}{'quant':<8}{'wall (s)':>10}{'peak RSS (MiB)':>16}{'above baseline':>16}{'file (MiB)':>12}")
        for tool, q, r, out in rows:
            if "error" in r:
                print(f"{tool:<28}{q:<8}  failed: {r['error']}")
                continue
            size = out.stat().st_size / 2**20 if out.is_file() else float("nan")
            extra = r["peak_rss_mb"] - base.get("peak_rss_mb", float("nan"))
            print(f"{tool:<28}{q:<8}{r['wall_s']:>10.1f}{r['peak_rss_mb']:>16.0f}{extra:>16.0f}{size:>12.1f}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
