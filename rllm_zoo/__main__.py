"""python -m rllm_zoo: the rllm-zoo command line."""

import sys

from .cli import main

sys.exit(main())
