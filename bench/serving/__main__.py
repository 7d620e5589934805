"""`python -m bench.serving`: runs the serving benchmark and prints the "Serving" section of BENCHMARKS.md."""

import sys

from bench.serving.run import main

sys.exit(main())
