"""`python -m bench.serving`: runs the serving benchmark and writes bench/serving/RESULTS.md."""

import sys

from bench.serving.run import main

sys.exit(main())
