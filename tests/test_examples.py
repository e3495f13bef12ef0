"""Every example runs end to end with tiny arguments."""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("prior", ["radial", "smooth"])
def test_motivating_case_example(tmp_path, monkeypatch, prior):
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "motivating_case.py",
            "--size",
            "12",
            "--samples",
            "60",
            "--prior",
            prior,
            "--out",
            str(tmp_path),
        ],
    )
    module = runpy.run_path(str(EXAMPLES / "motivating_case.py"), run_name="example")
    report = module["main"]()
    assert abs(report["noise_sigma"] - 1.0) < 0.3
    assert (tmp_path / "motivating_kernel.png").stat().st_size > 10_000


def test_choose_prior_example():
    module = runpy.run_path(str(EXAMPLES / "choose_prior.py"), run_name="example")
    report = module["main"](["--size", "32", "--kernel", "7", "--samples", "50"])
    # A Gaussian blur is radially symmetric, a motion streak is not.
    gaussian = report["gaussian"]["weights"]
    assert report["gaussian"]["chosen"].startswith("radial")
    assert sum(w for name, w in gaussian.items() if name.startswith("radial")) > 0.99
    assert report["motion"]["chosen"].startswith(("smooth", "elliptical"))
    assert report["motion"]["weights"]["radial"] < 1e-6
    assert all(r["error"] < 0.2 for r in report.values())


def test_tiles_field_example(tmp_path):
    module = runpy.run_path(str(EXAMPLES / "tiles_field.py"), run_name="example")
    report = module["main"](["--size", "48", "--tiles", "2", "--kernel", "5", "--samples", "40",
                             "--sync", "--out", str(tmp_path)])  # fmt: skip
    assert report["coverage_95"] > 0.8
    assert (tmp_path / "tiles_field.png").stat().st_size > 10_000
