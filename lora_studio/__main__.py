"""``python -m lora_studio``: the same as the ``lora-studio`` program."""
import sys

from lora_studio import main

sys.exit(main())
