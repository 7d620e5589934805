"""`python -m bench.serving_bench`: the serving benchmark (implemented in bench/serving/run.py)."""

import sys

from bench.serving.run import main

if __name__ == "__main__":
    sys.exit(main())
