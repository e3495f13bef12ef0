"""``python -m bayeskernel``: the same as the ``bayeskernel`` command."""

import sys

from bayeskernel.cli import main

if __name__ == "__main__":
    sys.exit(main())
