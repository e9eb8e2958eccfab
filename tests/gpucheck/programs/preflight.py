"""The preflight (before labq starts): run as the job's user, with the job's Python and the
job's --env, by `python -c SOURCE`; stdlib only. Prints one JSON line: the Python's version
and path, the uid, and the versions of torch, ray and pynvml (or why each does not import).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main() -> None:
    out: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable,
                           "uid": os.getuid()}
    for name in ("torch", "ray", "pynvml"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "ok")
        except Exception as exc:
            out[name + "_error"] = repr(exc)[:300]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
