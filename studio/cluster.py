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
from studio.fsutil import atomic_write_text
from studio.recipe import Recipe, RecipeError

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


def _copy_input(path: str, out: Path, what: str) -> str:
    src = Path(path).expanduser()
    if not src.exists():
        raise UserError(f"{what} {path}: not found; give --data-path with where it is on the cluster instead")
    dest = out / "data" / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dest)
    return str(dest.relative_to(out))


def export(source: Path, out: Path, nodes: int, gpus_per_node: int, data_path: str | None = None,
           model: str | None = None, port: int = RDZV_PORT) -> Exported:
    """Write the cluster folder for the recipe of ``source`` (a run folder or a recipe file)."""
    if nodes < 1 or gpus_per_node < 1:
        raise UserError("--nodes and --gpus-per-node must be 1 or more")
    recipe = _load(Path(source))
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; give a new folder for --out")
    out.mkdir(parents=True, exist_ok=True)
    if model:
        recipe.model.name_or_path = model
    if data_path:
        recipe.data.path = data_path
    else:
        recipe.data.path = _copy_input(recipe.data.path, out, "data.path")
        if recipe.data.heldout:
            recipe.data.heldout = _copy_input(recipe.data.heldout, out, "data.heldout")
    recipe.train.nproc, recipe.train.gpus = nodes * gpus_per_node, ""  # the world size; SLURM picks the GPUs
    problems = [p for p in recipe.validate() if p.field != "data.path"]
    if problems:
        raise UserError("the recipe has problems:\n  " + "\n  ".join(str(p) for p in problems))
    recipe.save(out / "recipe.json")
    run_dir = runs.create(recipe, out / "runs")
    run_rel = run_dir.relative_to(out)
    torchrun = (f"python -m torch.distributed.run --nnodes {nodes} --nproc-per-node {gpus_per_node} "
                f"--rdzv-backend c10d --rdzv-endpoint $MASTER_ADDR:{port} --rdzv-id {run_dir.name} "
                f"--max-restarts 0 -m workers.train {run_rel}")
    run_sh = out / "run.sh"
    atomic_write_text(run_sh, _run_sh(nodes, gpus_per_node, run_rel, run_dir.name, port))
    run_sh.chmod(0o755)
    sbatch = out / "job.sbatch"
    atomic_write_text(sbatch, _sbatch(nodes, gpus_per_node, run_dir.name))
    atomic_write_text(out / "README.txt", _readme(out, run_rel, nodes, gpus_per_node, torchrun, recipe))
    return Exported(out, run_dir, run_sh, sbatch, torchrun)


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


def _readme(out: Path, run_rel: Path, nodes: int, gpn: int, torchrun: str, recipe: Recipe) -> str:
    return f"""LoRA Studio cluster export: {nodes} node(s) x {gpn} GPU(s), run folder {run_rel}

Each node needs the studio installed (its Python with torch, transformers, peft, bitsandbytes) and
this folder on shared storage. The base model is {recipe.model.name_or_path!r}: it must exist at that path
(or in the Hugging Face cache) on every node; export again with --model PATH to change it.

SLURM:            sbatch job.sbatch
Without SLURM:    on every node: MASTER_ADDR=<first node> ./run.sh
That runs:        {torchrun}
One node, here:   NNODES=1 NPROC_PER_NODE=2 ./run.sh

Follow it:        lora-studio attach {run_rel}      (from any machine that sees this folder)
Stop it:          lora-studio attach {run_rel} --stop   (rank 0 reads the run's inbox, commands.jsonl)
Resume it:        sbatch job.sbatch --resume   or   ./run.sh --resume   (same number of GPUs: bit-exact)
Export it:        lora-studio export {run_rel} --format gguf
Rank 0 alone writes the run folder (events.jsonl, state.json, checkpoints, adapter); each node's
stderr goes to {run_rel}/worker-<host>.log.
"""
