"""Progress bars for the stages of a fit, in the style of NumPyro's (tqdm).

One bar per stage, shown only once the stage has run for :data:`DELAY`
seconds, so quick fits print nothing; ``enabled=False`` prints nothing at all.
"""

from __future__ import annotations

__all__ = ["DELAY", "Progress"]

# Stages quicker than this show no bar.
DELAY = 2.0


class Progress:
    """Bars for the successive stages of one task.

    Parameters
    ----------
    enabled : bool
        ``False``: silent (``fit(progress_bar=False)``).
    description : str
        Prefix of each bar, e.g. ``'exact smooth'``.

    Examples
    --------
    >>> with Progress(False, "exact smooth") as progress:
    ...     progress.stage("kernel draws", total=3)
    ...     progress.advance(3)
    """

    def __init__(self, enabled: bool = True, description: str = ""):
        self.enabled = bool(enabled)
        self.description = description
        self._bar = None

    def stage(self, name: str, total: int | None = None) -> None:
        """Close the current stage's bar and start the next."""
        self.close()
        if self.enabled:
            from tqdm.auto import tqdm

            label = f"{self.description}: {name}" if self.description else name
            self._bar = tqdm(total=total, desc=label, delay=DELAY, leave=True)

    def advance(self, count: int = 1) -> None:
        """Count ``count`` units of the current stage as done."""
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
