"""``python -m bayeskernel``: the same as the ``bayeskernel`` command."""

from bayeskernel.cli import run

if __name__ == "__main__":
    run()
