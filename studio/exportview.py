"""What the Export page lists and shows, without Qt: the runs that can be exported, and the result of an
export (the worker's done event) as a heading and one row per file written."""
from __future__ import annotations

from pathlib import Path

from studio import runs
from studio.units import decimal_bytes


def exportable_runs() -> list[tuple[str, Path]]:
    """(label, run folder) of every run that saved an adapter, newest first, as the run list shows them."""
    out = []
    for s in runs.list_runs():
        if (s.path / runs.ADAPTER).is_dir():
            loss = f"{s.final_loss:.4f}" if isinstance(s.final_loss, (int, float)) else "–"
            out.append((f"{s.id}  ({s.status}, last loss {loss})", s.path))
    return out


def result_heading(done: dict) -> str:
    """"ollama (q4_k_m) from run R, step N": the format, its quantisation and what it was made from."""
    quant = f" ({done['quant']})" if done.get("quant") else ""
    source = done.get("source") or {}
    step = source.get("step")
    origin = (f" from run {source.get('run_id')}" + (f", step {step}" if step is not None else "")) if source else ""
    return f"{done.get('format', '')}{quant}{origin}"


def result_files(done: dict) -> list[tuple[str, str, str]]:
    """(name, size, what it is) per file the export wrote."""
    return [(str(f.get("name", "")), decimal_bytes(int(f.get("bytes") or 0)),
             ", ".join(str(x) for x in (f.get("kind"), f.get("quant")) if x)) for f in done.get("files") or []]
