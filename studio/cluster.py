"""A run packed for a cluster: ``lora-studio cluster export`` (torch-free).

The folder holds everything a node with the studio installed needs, and nothing home-made runs
the job: torchrun (torch.distributed.run) starts one worker per GPU on each node and joins them
through its c10d rendezvous; SLURM's sbatch starts torchrun once per node.

    OUT/recipe.json          the recipe as exported (data.path relative to OUT when the data was copied)
    OUT/data/                the dataset (and held-out prompts), copied unless --data-path names them
    OUT/runs/<id>/           the run folder: recipe.json, plan-free; events, state, checkpoints, adapter land here
    OUT/run.sh               torchrun on one node; run it on every node (or let sbatch do it)
    OUT/job.sbatch           SLURM: N nodes x G GPUs, srun runs run.sh on each
    OUT/README.txt           the command lines and how to follow, stop, resume and export the run

The run folder is an ordinary one: on shared storage ``lora-studio attach OUT/runs/<id>`` follows
it from any machine that sees the folder, ``lora-studio export`` exports it, and
``run.sh --resume`` (or ``sbatch job.sbatch --resume``) continues it from its last checkpoint.
"""
from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from studio import runs
from studio.errors import UserError
from studio.fsutil import atomic_dir, atomic_write_text
from studio.recipe import Recipe, RecipeError
from studio.termtext import printable

RDZV_PORT = 29400


@dataclass
class Exported:
    folder: Path
    run_dir: Path
    run_sh: Path
    sbatch: Path
    torchrun: str  # the command line run.sh executes, as the user would type it


def _load(source: Path) -> Recipe:
    path = source / runs.RECIPE if source.is_dir() else source
    try:
        return Recipe.load(path, [])
    except RecipeError as e:
        raise UserError(f"{source}: {e}" if source.is_dir() else str(e)) from None


def _planned_copy(path: str, out: Path, what: str, taken: set[str]) -> tuple[Path, str]:
    """Where an input goes in OUT/data (``(source, path relative to OUT)``), checked before anything is copied."""
    if not str(path).strip():
        raise UserError(f"{what} is empty in the recipe: set it, or give --data-path with where the data is on "
                        "the cluster")
    src = Path(path).expanduser()
    if not src.exists():
        raise UserError(f"{what} {printable(path)}: not found; give --data-path with where it is on the cluster "
                        "instead")
    real = src.resolve()
    if out == real or out.is_relative_to(real):
        raise UserError(f"--out {printable(out)} is inside {what} {printable(real)}: the copy would copy itself. "
                        "Give an --out outside the data folder")
    name, n = src.name or "data", 1
    while name in taken:  # data.path and data.heldout of the same name: two files, not one
        n += 1
        name = f"{n}-{src.name}"
    taken.add(name)
    return src, f"data/{name}"


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)


def export(source: Path, out: Path, nodes: int, gpus_per_node: int, data_path: str | None = None,
           model: str | None = None, port: int = RDZV_PORT) -> Exported:
    """Write the cluster folder for the recipe of ``source`` (a run folder or a recipe file).

    Everything is checked before anything is written, and the folder is built beside ``out`` and
    renamed into place: a refused or failed export leaves nothing behind, so it can simply be retried.
    """
    if nodes < 1 or gpus_per_node < 1:
        raise UserError("--nodes and --gpus-per-node must be 1 or more")
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: give a TCP port from 1 to 65535")
    recipe = _load(Path(source))
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{printable(out)}: exists and is not an empty folder; give a new folder for --out")
    if model:
        recipe.model.name_or_path = model
    copies: list[tuple[Path, str]] = []
    if data_path:
        recipe.data.path = data_path
    else:
        taken: set[str] = set()
        copies.append(_planned_copy(recipe.data.path, out, "data.path", taken))
        recipe.data.path = copies[-1][1]
        if recipe.data.heldout:
            copies.append(_planned_copy(recipe.data.heldout, out, "data.heldout", taken))
            recipe.data.heldout = copies[-1][1]
    recipe.train.nproc, recipe.train.gpus = nodes * gpus_per_node, ""  # the world size; SLURM picks the GPUs
    problems = [p for p in recipe.validate() if p.field != "data.path"]
    if problems:
        raise UserError("the recipe has problems:\n  " + "\n  ".join(str(p) for p in problems))
    try:
        with atomic_dir(out, overwrite=out.exists()) as tmp:
            for src, rel in copies:
                _copy(src, tmp / rel)
            run_rel = _write(tmp, recipe, nodes, gpus_per_node, port)
    except (OSError, shutil.Error) as e:
        raise UserError(f"could not write the cluster folder {printable(out)} ({printable(e, limit=300)}); "
                        "nothing was left there") from None
    return Exported(out, out / run_rel, out / "run.sh", out / "job.sbatch",
                    _torchrun(nodes, gpus_per_node, port, run_rel))


def _write(folder: Path, recipe: Recipe, nodes: int, gpn: int, port: int) -> Path:
    """The recipe, the run folder, run.sh, job.sbatch and README.txt in ``folder``; the run folder, relative."""
    recipe.save(folder / "recipe.json")
    run_dir = runs.create(recipe, folder / "runs")
    run_rel = run_dir.relative_to(folder)
    run_sh = folder / "run.sh"
    atomic_write_text(run_sh, _run_sh(nodes, gpn, run_rel, run_dir.name, port))
    run_sh.chmod(0o755)
    atomic_write_text(folder / "job.sbatch", _sbatch(nodes, gpn, run_dir.name))
    atomic_write_text(folder / "README.txt", _readme(run_rel, nodes, gpn, _torchrun(nodes, gpn, port, run_rel), recipe))
    return run_rel


def _torchrun(nodes: int, gpn: int, port: int, run_rel: Path) -> str:
    """The command line run.sh executes, as the user would type it."""
    return (f"python -m torch.distributed.run --nnodes {nodes} --nproc-per-node {gpn} "
            f"--rdzv-backend c10d --rdzv-endpoint $MASTER_ADDR:{port} --rdzv-id {shlex.quote(run_rel.name)} "
            f"--max-restarts 0 -m workers.train {shlex.quote(str(run_rel))}")


def _run_sh(nodes: int, gpn: int, run_rel: Path, run_id: str, port: int) -> str:
    return f"""#!/usr/bin/env bash
# LoRA Studio: train {run_rel} on {nodes} node(s) x {gpn} GPU(s) with torchrun. Run this on every node
# (job.sbatch does that under SLURM). Extra arguments go to the worker: ./run.sh --resume continues.
#   MASTER_ADDR   host name of the first node (default: localhost, one node)
#   NNODES, NPROC_PER_NODE, MASTER_PORT   override the exported {nodes}, {gpn}, {port}
#   LORA_STUDIO_PYTHON   the Python that has the studio and torch (default: python3)
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
cd "$HERE"  # the recipe's relative data path is read from here
RUN={shlex.quote(str(run_rel))}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "${{LORA_STUDIO_PYTHON:-python3}}" -m torch.distributed.run \\
  --nnodes "${{NNODES:-{nodes}}}" --nproc-per-node "${{NPROC_PER_NODE:-{gpn}}}" \\
  --rdzv-backend c10d --rdzv-endpoint "${{MASTER_ADDR:-localhost}}:${{MASTER_PORT:-{port}}}" \\
  --rdzv-id {shlex.quote(run_id)} --max-restarts 0 \\
  -m workers.train "$RUN" "$@" 2>>"$RUN/worker-$(hostname).log"
"""


def _sbatch(nodes: int, gpn: int, run_id: str) -> str:
    return f"""#!/usr/bin/env bash
#SBATCH --job-name=lora-studio-{run_id}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpn}
#SBATCH --cpus-per-task={max(4, 4 * gpn)}
#SBATCH --output=slurm-%x-%j.out
# Submit from inside this folder (on storage every node sees): sbatch job.sbatch [--resume]
set -euo pipefail
HERE="${{SLURM_SUBMIT_DIR:-$(pwd)}}"
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_ADDR NNODES="$SLURM_NNODES" NPROC_PER_NODE={gpn}
# one torchrun per node; a failure on any node ends the whole job
srun --kill-on-bad-exit=1 bash "$HERE/run.sh" "$@"
"""


def _readme(run_rel: Path, nodes: int, gpn: int, torchrun: str, recipe: Recipe) -> str:
    q = shlex.quote(str(run_rel))
    return f"""LoRA Studio cluster export: {nodes} node(s) x {gpn} GPU(s), run folder {run_rel}

Each node needs the studio installed (its Python with torch, transformers, peft, bitsandbytes) and
this folder on shared storage. The base model is {recipe.model.name_or_path!r}: it must exist at that path
(or in the Hugging Face cache) on every node; export again with --model PATH to change it.

SLURM:            sbatch job.sbatch
Without SLURM:    on every node: MASTER_ADDR=<first node> ./run.sh
That runs:        {torchrun}
One node, here:   NNODES=1 NPROC_PER_NODE=2 ./run.sh

Follow it:        lora-studio attach {q}      (from any machine that sees this folder)
Stop it:          lora-studio attach {q} --stop   (rank 0 reads the run's inbox, commands.jsonl)
Resume it:        sbatch job.sbatch --resume   or   ./run.sh --resume   (same number of GPUs: bit-exact)
Export it:        lora-studio export {q} --format gguf
Rank 0 alone writes the run folder (events.jsonl, state.json, checkpoints, adapter); each node's
stderr goes to {run_rel}/worker-<host>.log.
"""
