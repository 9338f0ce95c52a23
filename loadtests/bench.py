"""The side-by-side benchmark as a script: `python loadtests/bench.py [--quick]` is `tools bench [--quick]`."""

import sys

from tools.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]])
