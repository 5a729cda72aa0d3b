"""``python -m pioneer.trainer ATTEMPT_URI``: the trainer program, the same as a Kubernetes Job and as a local process."""

import os
import sys

from pioneer import defaults as d

# read once, when torch first loads OpenMP: set before anything imports torch (a value the user set wins)
os.environ.setdefault("OMP_WAIT_POLICY", d.TRAINER_OMP_WAIT_POLICY)

from pioneer.trainer.run import main

sys.exit(main())
