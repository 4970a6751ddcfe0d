"""fastai's own API on fastgr's loaders: `tta`, `ClassificationInterpretation` (`plot_top_losses`), `show_results`
and `predict` on images in memory, for data in memory (`TensorDL`) and streamed files (`StreamDL`)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from fastai.interpret import ClassificationInterpretation  # noqa: E402

from fastgr import gr_learner, load_data, make_dataloaders  # noqa: E402
from fastgr.images import array_hwc  # noqa: E402
from tests.conftest import make_digits_folder  # noqa: E402


def _learner(data, **kw):
    dls = make_dataloaders(data, bs=64, augment="crop+flip", **kw)
    learn = gr_learner(dls, "cifar_resnet20", lam=0.5, beta=8)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, 0.05)
    return learn


@pytest.fixture(scope="module")
def in_memory():
    return _learner(load_data("digits"))


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = make_digits_folder(tmp_path_factory.mktemp("digits"), per_class=12, held_out=4)
    return _learner(load_data(root, img_size=16, in_memory="no"))


def test_tta_averages_augmented_passes_of_the_held_out_set(in_memory):
    learn = in_memory
    with learn.no_bar():
        plain, targs = learn.get_preds()
        (aug, again), tta_targs = learn.tta(n=2, beta=None)
        mixed, _ = learn.tta(n=2)
    n = len(learn.dls.valid.dataset)
    assert aug.shape == plain.shape == (n, 10) and torch.equal(tta_targs, targs)
    torch.testing.assert_close(again, plain)  # the plain pass is untouched by the augmentation it carries
    assert (aug - plain).abs().max() > 1e-3  # the augmented passes saw other pixels
    torch.testing.assert_close(aug.sum(1), torch.ones(n))
    # fastai's default blend, 3/4 augmented; the held-out passes draw the same augmentation each time (seeded)
    torch.testing.assert_close(mixed, torch.lerp(aug, plain, 0.25))
    with learn.no_bar():
        torch.testing.assert_close(learn.get_preds()[0], plain)  # and TTA leaves the loader as it was


def test_interpretation_plots_the_top_losses_of_the_right_examples(in_memory):
    learn = in_memory
    with learn.no_bar():
        interp = ClassificationInterpretation.from_learner(learn)
        losses, idx = interp.top_losses(5)
        _, preds, targs, _, _ = interp[idx]
    valid = learn.dls.valid.dataset
    assert torch.equal(targs.cpu(), valid.y[idx].cpu())  # each plotted example with its own label
    assert (losses[:-1] >= losses[1:]).all()  # the largest first
    # each loss is its example's cross-entropy; a top loss's probability may underflow to 0 in float32 (log: inf)
    ce = -preds.float()[torch.arange(len(targs)), targs].log()
    finite = ce.isfinite()
    assert finite.sum() >= 3
    torch.testing.assert_close(ce[finite], losses[finite], rtol=1e-4, atol=1e-4)
    plt.close("all")
    with learn.no_bar():
        interp.plot_top_losses(5)
    axes = [ax for ax in plt.gcf().axes if ax.get_title()]
    assert len(axes) == 5 and all("/" in ax.get_title() for ax in axes)  # predicted/actual/loss/probability
    plt.close("all")


def test_show_results_titles_each_image_with_label_and_prediction(in_memory):
    plt.close("all")
    with in_memory.no_bar():
        in_memory.show_results(max_n=6)
    titles = [ax.get_title() for ax in plt.gcf().axes if ax.get_title()]
    assert len(titles) == 6 and all(t.count("\n") == 1 for t in titles)  # actual, then predicted
    plt.close("all")


@pytest.mark.parametrize("which", ["in_memory", "streamed"])
def test_predict_takes_numpy_images_in_either_layout(which, request):
    learn = request.getfixturevalue(which)
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 256, (1, 16, 16), dtype=np.uint8)
    with learn.no_bar():
        results = [learn.predict(im) for im in (chw, np.moveaxis(chw, 0, -1), chw[0], torch.from_numpy(chw))]
    for label, idx, probs in results[1:]:
        assert label == results[0][0] and int(idx) == int(results[0][1])
        torch.testing.assert_close(probs, results[0][2])
    with learn.no_bar():
        rgb = learn.predict(np.repeat(chw, 3, 0))[2]  # a colour image given to a grayscale model
    assert rgb.shape == (10,) and abs(float(rgb.sum()) - 1) < 1e-5


def test_streamed_data_takes_tta_and_interpretation(streamed):
    learn = streamed
    with learn.no_bar():
        plain, targs = learn.get_preds()
        preds, tta_targs = learn.tta(n=2)
        interp = ClassificationInterpretation.from_learner(learn)
        _, idx = interp.top_losses(3)
        _, _, top_targs, _, _ = interp[idx]
    assert preds.shape == plain.shape and torch.equal(tta_targs, targs)
    assert torch.equal(top_targs.cpu(), targs[idx].cpu())
    plt.close("all")
    with learn.no_bar():
        interp.plot_top_losses(3)
    assert len([ax for ax in plt.gcf().axes if ax.get_title()]) == 3
    plt.close("all")


@pytest.mark.parametrize("shape, dtype, message", [
    ((16, 16, 2), np.uint8, "C 1, 3 or 4"),
    ((2, 16, 16, 1), np.uint8, "HxW, HxWxC or CxHxW"),
    ((16, 16), np.float32, "must be uint8"),
])
def test_an_array_that_is_no_image_is_named(shape, dtype, message):
    with pytest.raises(ValueError, match=message):
        array_hwc(np.zeros(shape, dtype))
