"""Entry point run exactly like ComfyUI's: ``python main.py [ComfyUI flags]`` from its directory.

Python puts this script's folder first on ``sys.path``; it is replaced by the repository root so the
package imports as ``tests.comfy_double`` from any working directory (and no module of this folder
can shadow a standard-library module).
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path.pop(0)
sys.path.insert(0, str(_HERE.parent.parent))

from tests.comfy_double.cli import main  # noqa: E402 - sys.path must be fixed first

if __name__ == "__main__":
    sys.exit(main())
