"""`python -m tests.gpucheck ARGS` (from the repository root): the same as scripts/gpu-check."""

from __future__ import annotations

import sys

from .run import main

sys.exit(main())
