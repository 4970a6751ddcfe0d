"""`TensorDL` as a fastai DataLoader: one_batch, show_batch, predict on raw images, export and load_learner."""

import numpy as np
import pytest
import torch
from fastai.learner import load_learner
from PIL import Image

from fastgr import ImageTensors, TensorDL, gr_learner, load_data, make_dataloaders
from fastgr.telemetry import batch_indices


@pytest.fixture
def folder_dls(image_folder):
    data = load_data(image_folder, img_size=8)
    return data, make_dataloaders(data, bs=16, augment="crop+flip", seed=1)


def test_one_batch_show_batch_and_decode(folder_dls):
    import matplotlib.pyplot as plt

    data, dls = folder_dls
    xb, yb = dls.train.one_batch()
    assert xb.shape == (16, 3, 8, 8) and xb.dtype == torch.float32 and yb.dtype == torch.long
    # the batch's dataset indices: one documented place
    idx = batch_indices(dls.train, 0, 16)
    assert torch.equal(data.train_y[idx], yb)
    # decoding undoes the normalisation: the uint8 pixels of the (augmented) batch, the labels as class names
    plain = dls.valid.one_batch()
    decoded = dls.valid.decode_batch(plain, max_n=4)
    assert len(decoded) == 4
    for i, (img, label) in enumerate(decoded):
        assert torch.equal(img, data.valid_x[i]) and label == data.classes[data.valid_y[i]]
    dls.train.show_batch(max_n=4)
    titles = [ax.get_title() for ax in plt.gcf().axes if ax.get_title()]
    assert len(titles) == 4 and set(titles) <= set(data.classes)
    plt.close("all")


def test_new_keeps_the_settings_and_refuses_unknown_ones(folder_dls):
    _, dls = folder_dls
    dl = dls.train.new(shuffle=False, augment="none")
    assert (dl.bs, dl.seed, dl.mean, dl.vocab) == (dls.train.bs, 1, dls.train.mean, dls.train.vocab)
    assert dl.augment == "none" and not dl.shuffle and dls.train.augment == "crop+flip"
    with pytest.raises(TypeError, match="unexpected keyword argument.*augmnet"):
        dls.train.new(augmnet="none")
    with pytest.raises(ValueError, match="takes no workers"):
        dls.train.new(num_workers=2)
    empty = dls.train.new(dls.train.dataset.new_empty())
    assert len(empty.dataset) == 0 and empty.x.shape[1:] == dls.train.x.shape[1:]


def test_predict_on_raw_images_and_after_load_learner(tmp_path, image_folder, folder_dls):
    data, dls = folder_dls
    learn = gr_learner(dls, "cifar_resnet20")
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(2)
    probs, _ = learn.get_preds(dl=dls.valid)
    path = image_folder / "valid" / "dog" / "valid_000.png"
    i = data.valid_items.index("valid/dog/valid_000.png")
    # a path, a PIL image, an HxWxC array and a CxHxW tensor of the same image predict the same
    items = [path, Image.open(path), np.asarray(Image.open(path)), data.valid_x[i]]
    for item in items:
        label, k, p = learn.predict(item)
        assert label == data.classes[int(k)] and int(k) == int(p.argmax())
        torch.testing.assert_close(p, probs[i], rtol=1e-5, atol=1e-6)
    learn.export(tmp_path / "learner.pkl")
    loaded = load_learner(tmp_path / "learner.pkl")
    assert isinstance(loaded.dls.train, TensorDL) and len(loaded.dls.train.dataset) == 0
    label, k, p = loaded.predict(path)
    torch.testing.assert_close(p, probs[i], rtol=1e-5, atol=1e-6)
    assert loaded.dls.vocab == data.classes


def test_images_are_resized_and_converted_like_the_data(folder_dls):
    _, dls = folder_dls
    big_gray = Image.fromarray(np.full((20, 30), 200, np.uint8))
    x = dls.train.images([big_gray]).x
    assert x.shape == (1, 3, 8, 8) and int(x.min()) == int(x.max()) == 200
    with pytest.raises(ValueError, match="uint8"):
        ImageTensors(torch.zeros(2, 3, 4, 4), torch.zeros(2))


def test_balanced_order_puts_every_class_in_every_block():
    "Each C consecutive indices hold each class once; a rare class repeats, a common one is cut; seeded."
    from fastgr.sampling import balanced_order

    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2])  # 2, 6 and 4 examples of 3 classes
    order = balanced_order(labels, torch.Generator().manual_seed(0))
    assert order.shape == (12,)
    blocks = labels[order].view(4, 3)
    assert (blocks.sort(1).values == torch.tensor([0, 1, 2])).all()  # one of each class in every block
    counts = torch.bincount(order, minlength=12)
    assert counts[:2].tolist() == [2, 2]  # class 0's two examples drawn twice each for its 4 slots
    assert counts[2:8].sum() == 4 and counts[2:8].max() == 1  # 4 of class 1's 6, none twice
    assert counts[8:].tolist() == [1, 1, 1, 1]  # class 2 exactly once each
    assert torch.equal(order, balanced_order(labels, torch.Generator().manual_seed(0)))
    assert not torch.equal(order, balanced_order(labels, torch.Generator().manual_seed(1)))
    labels = torch.tensor([3, 3, 7, 7, 7])  # classes present, not 0..C-1; N not a multiple of C
    assert labels[balanced_order(labels, torch.Generator().manual_seed(0))][:4].sort().values.tolist() == [3, 3, 7, 7]
    labels = torch.tensor([0, 1, 2, 2])  # fewer slots in the last block than classes
    assert sorted(labels[balanced_order(labels, torch.Generator().manual_seed(0))][:3].tolist()) == [0, 1, 2]


def test_balanced_loader_batches_hold_each_class_equally():
    """`TensorDL(balanced=True)`: batches of 4 from 2 classes (1 of class 0, 7 of class 1) hold 2 of each; an
    epoch's order depends on (seed, epoch) only; without shuffle the order is the data's own."""
    y = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1])
    data = ImageTensors(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), y)
    dl = TensorDL(data, bs=4, shuffle=True, balanced=True, seed=3)
    first = [yb.tolist() for _, yb in dl]
    assert [sorted(b) for b in first] == [[0, 0, 1, 1], [0, 0, 1, 1]]
    again = TensorDL(data, bs=4, shuffle=True, balanced=True, seed=3)
    assert [yb.tolist() for _, yb in again] == first
    assert TensorDL(data, bs=4, balanced=True).get_idxs().tolist() == list(range(8))
    assert dl.new(shuffle=False).balanced  # fastai's copies keep the setting


def test_make_dataloaders_balances_in_memory_data_only(image_folder):
    "`make_dataloaders(balanced=True)`: the training loader draws balanced batches; streamed files are refused."
    import fastgr

    dls = make_dataloaders(load_data(image_folder, img_size=8), bs=2, balanced=True)
    assert dls.train.balanced and not dls.valid.balanced
    assert fastgr.balanced_order is fastgr.loader.balanced_order
    with pytest.raises(ValueError, match="class-balanced batches .--balanced. need the data in memory"):
        make_dataloaders(load_data(image_folder, img_size=8, in_memory="no"), bs=2, balanced=True)
