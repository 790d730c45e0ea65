"""Out-of-process look-ups whose core functions need torch: ``python -m ui.probe model NAME``.

``studio.models.resolve`` counts a folder model's parameters on torch's meta device; the window
must stay torch-free, so it runs this in a subprocess and reads one JSON document from stdout.
Errors a user can fix come back as ``{"error": "..."}`` with exit code 2.
"""
from __future__ import annotations

import json
import sys


def model_info(name: str) -> dict:
    from studio import models

    return models.resolve(name).to_dict()


def info_from_dict(d: dict):
    """Rebuild a ``studio.models.ModelInfo`` from its ``to_dict()`` (in the GUI process, torch-free)."""
    from studio.models import LinearGroup, ModelInfo

    d = dict(d)
    d.pop("total_params", None)
    d["linears"] = [LinearGroup(**g) for g in d.get("linears", [])]
    known = set(ModelInfo.__dataclass_fields__)
    return ModelInfo(**{k: v for k, v in d.items() if k in known})


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "model":
        print("usage: python -m ui.probe model NAME_OR_PATH", file=sys.stderr)
        return 2
    try:
        out = model_info(argv[1])
    except ValueError as e:  # ModelError and friends: a message for the user
        print(json.dumps({"error": str(e)}))
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
