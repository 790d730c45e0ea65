"""`lora-studio cluster export RUN_OR_RECIPE --nodes N --gpus-per-node G --out DIR`: the same run on a cluster."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from studio import cluster
from studio.errors import UserError
from studio.termtext import printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="run a recipe on a cluster (torchrun on several nodes, SLURM)",
                       description="Pack a run or recipe into a folder a cluster with the studio installed can run: "
                                   "the recipe, a copy of the dataset, a torchrun command line for several nodes "
                                   "(run.sh) and a SLURM script (job.sbatch). Its run folder is an ordinary one: "
                                   "follow it with 'lora-studio attach', export and resume it as usual. "
                                   "See docs/multi-gpu.md.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = actions.add_parser("export", help="write the cluster folder",
                           description="Write OUT/recipe.json, OUT/data/, OUT/runs/<id>/, OUT/run.sh, OUT/job.sbatch "
                                       "and OUT/README.txt.")
    e.add_argument("source", type=Path, metavar="RUN_OR_RECIPE", help="a run folder or a recipe JSON file")
    e.add_argument("--nodes", type=int, required=True, help="machines to train on")
    e.add_argument("--gpus-per-node", type=int, required=True, help="GPUs (training processes) on each machine")
    e.add_argument("--out", type=Path, required=True, help="a new folder, on storage every node sees")
    e.add_argument("--data-path", help="where the dataset is on the cluster (default: copy it into OUT/data)")
    e.add_argument("--model", help="the base model's folder or id on the cluster (default: the recipe's)")
    e.add_argument("--port", type=int, default=29400, help="torchrun's rendezvous port on the first node")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.source.exists():
        raise UserError(f"{printable(args.source)}: not found; give a run folder or a recipe JSON file")
    done = cluster.export(args.source, args.out, args.nodes, args.gpus_per_node, data_path=args.data_path,
                          model=args.model, port=args.port)
    folder, run_sh, run_dir = (printable(shlex.quote(str(p))) for p in (done.folder, done.run_sh, done.run_dir))
    print(f"cluster folder: {printable(done.folder)}\nrun folder:     {printable(done.run_dir)}\n"
          f"SLURM:          cd {folder} && sbatch job.sbatch\n"
          f"without SLURM:  MASTER_ADDR=<first node> {run_sh}   (on every node)\n"
          f"one node here:  NNODES=1 NPROC_PER_NODE=2 {run_sh}\n"
          f"follow it:      lora-studio attach {run_dir}")
    return 0
