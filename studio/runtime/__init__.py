"""The managed ML runtime: a virtual environment in the user's data folder that holds torch and friends.

A packaged GUI carries no torch (the window never imports it), so the first run creates
``data_dir()/runtime`` from a Python 3.10+ found on the machine and installs the pinned versions of
the lock shipped with the app. The modules split by who calls them:

- ``state``: whether it is ready (the window, the doctor); where it lives and its interpreter are
  ``studio.runtime_home``, below the workers' launcher (``studio.procs``), which setup and doctor use;
- ``setup``: creating or repairing it (``lora-studio runtime setup``, the first-run dialog), with
  ``torch_choice``: which torch build this machine gets;
- ``doctor``: what is wrong with this machine, in words (``lora-studio doctor``, Help > Diagnostics);
- ``probe``: versions and devices as the workers see them (``python -m studio.runtime.probe``, run
  under the runtime's own interpreter; it imports torch).

Nothing here but ``probe`` imports torch.
"""
