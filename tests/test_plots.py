"""Every figure renders with Agg on real fitted posteriors; the report writes them all."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import bayeskernel as bk  # noqa: E402
from bayeskernel import plots  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def case():
    return bk.simulate((24, 24), "gaussian", (5, 5), noise_sigma=0.05, seed=3)


@pytest.fixture(scope="module")
def map_posterior(case):
    return bk.fit(
        case.A, case.B, (5, 5), prior="smooth", method="map", num_samples=40, progress_bar=False
    )


@pytest.fixture(scope="module")
def exact_posterior(case):
    # Two chains with NUTS on the hyperparameters: exercises per-chain traces and
    # the divergence markers of the pair plot.
    return bk.fit(
        case.A, case.B, (5, 5), prior="smooth", method="exact", num_warmup=30, num_samples=30,
        progress_bar=False,
    )  # fmt: skip


def _assert_writes_png(fig, path):
    assert isinstance(fig, Figure)
    fig.savefig(path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


@pytest.mark.parametrize("route", ["map_posterior", "exact_posterior"])
@pytest.mark.parametrize(
    "make",
    [
        lambda p, k: plots.plot_kernel(p, k),
        lambda p, k: plots.plot_kernel(p),
        lambda p, k: plots.plot_radial_profile(p, k),
        lambda p, k: plots.plot_residuals(p),
        lambda p, k: plots.plot_predictive_check(p, num_draws=20),
        lambda p, k: plots.plot_trace(p),
        lambda p, k: plots.plot_rank(p),
        lambda p, k: plots.plot_pair(p),
        lambda p, k: plots.plot_trace(p, entries=[(0, 0), (4, 4), (2, 3)]),
    ],
    ids=[
        "kernel", "kernel-no-truth", "radial", "residuals", "ppc", "trace", "rank", "pair",
        "trace-entries",
    ],
)  # fmt: skip
def test_each_plot_writes_a_png(request, route, make, case, tmp_path):
    posterior = request.getfixturevalue(route)
    before = plt.get_fignums()
    _assert_writes_png(make(posterior, case.kernel), tmp_path / "figure.png")
    # Built with Figure(), not pyplot: nothing left open.
    assert plt.get_fignums() == before


def test_trace_shows_one_line_per_chain(exact_posterior):
    fig = plots.plot_trace(exact_posterior, entries=[(2, 2)])
    # noise sd, kernel scale, one entry; density and trace columns.
    assert len(fig.axes) == 3 * 2
    assert len(fig.axes[1].get_lines()) >= exact_posterior.num_chains


def test_trace_leaves_out_constant_hyperparameters(map_posterior):
    fig = plots.plot_trace(map_posterior, entries=[(2, 2)])
    titles = {ax.get_title() for ax in fig.axes}
    assert titles == {"kernel[2, 2]"}


def test_radial_profile_of_a_radial_kernel_is_exact():
    kernel = bk.make_kernel("gaussian", (7, 7), width=1.5)
    radius, profile = plots.radial_profile(kernel)
    assert radius[0] == 0.0 and profile[0] == kernel[3, 3]
    # Ring 1 holds distances in [0.5, 1.5): four edge and four diagonal neighbours.
    assert radius[1] == pytest.approx((1 + np.sqrt(2)) / 2)
    assert profile[1] == pytest.approx((kernel[3, 4] + kernel[4, 4]) / 2)
    assert np.all(np.diff(profile) < 0)
    stacked = np.stack([kernel, 2 * kernel])
    np.testing.assert_allclose(plots.radial_profile(stacked)[1], [profile, 2 * profile])


def test_radial_profile_band_contains_the_mean(map_posterior, case):
    fig = plots.plot_radial_profile(map_posterior, case.kernel, prob=0.9)
    ax = fig.axes[0]
    band = ax.collections[1].get_paths()[0].vertices
    mean_line = ax.get_lines()[0].get_ydata()
    assert band[:, 1].min() <= mean_line.min() and band[:, 1].max() >= mean_line.max()


def test_residual_panel_reports_the_white_noise_statistics(map_posterior):
    fig = plots.plot_residuals(map_posterior)
    residual = bk.diagnostics.residuals(map_posterior)
    assert f"sd {np.std(residual):.3g}" in fig.axes[1].get_title()  # [map, histogram, colour bar]


def test_bad_arguments_are_refused(map_posterior):
    with pytest.raises(ValueError, match="true_kernel has shape"):
        plots.plot_kernel(map_posterior, np.ones((3, 3)))
    with pytest.raises(ValueError, match="outside the 5x5 kernel"):
        plots.plot_trace(map_posterior, entries=[(5, 0)])
    without_data = bk.KernelPosterior(
        map_posterior.kernel_draws, map_posterior.noise_sigma_draws,
        map_posterior.kernel_scale_draws, method="map", prior="smooth",
    )  # fmt: skip
    with pytest.raises(ValueError, match="needs the data"):
        plots.plot_residuals(without_data)


def test_report_to_a_folder_writes_every_figure(exact_posterior, case, tmp_path):
    written = exact_posterior.plot_report(tmp_path / "report", true_kernel=case.kernel)
    assert [p.name for p in written] == [f"{name}.png" for name in plots.REPORT_FIGURES]
    for path in written:
        assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 5000
    assert plt.get_fignums() == []


def test_prior_weights_plot_for_a_model_average(tmp_path):
    disk = bk.simulate((24, 24), "disk", (5, 5), noise_sigma=0.1, seed=0)
    post = bk.fit(disk.A, disk.B, (5, 5), prior=["radial", "radial1", "smooth"],
                  num_samples=20, progress_bar=False)  # fmt: skip
    fig = plots.plot_prior_weights(post)
    left, right = fig.axes
    # Best on top; bar lengths are the evidence gaps and the weights.
    assert [t.get_text() for t in left.get_yticklabels()] == ["smooth", "radial", "radial1"]
    weights = post.diagnostics["prior_weights"]
    widths = [bar.get_width() for bar in right.patches]
    np.testing.assert_allclose(widths, [weights[n] for n in ("smooth", "radial", "radial1")])
    _assert_writes_png(fig, tmp_path / "weights.png")
    written = post.plot_report(tmp_path / "report")
    assert (tmp_path / "report" / "prior_weights.png") in written
    with pytest.raises(ValueError, match="needs a fit with prior='auto'"):
        plots.plot_prior_weights(bk.fit(disk.A, disk.B, (5, 5), prior="smooth", method="map",
                                        num_samples=5, progress_bar=False))  # fmt: skip


def test_report_to_pdf_has_one_page_per_figure(map_posterior, tmp_path):
    (path,) = map_posterior.plot_report(tmp_path / "report.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    pages = re.findall(rb"/Type\s*/Page(?!s)", data)
    assert len(pages) == len(plots.REPORT_FIGURES)
