"""Data sources, the device-side augmentation and the tensor loader; the CIFAR ResNets in timm's registry."""

import numpy as np
import pytest
import timm
import torch

from fastgr.augment import augment_batch
from fastgr.data import load_data, load_digits, load_folder
from fastgr.loader import ImageTensors, TensorDL
from fastgr.models import create_model
from tests.conftest import make_image_folder


def test_digits_fixed_split_and_sizes():
    d = load_digits(16)
    assert d.train_x.shape == (1437, 1, 16, 16) and d.valid_x.shape == (360, 1, 16, 16)
    assert d.train_x.dtype == torch.uint8 and d.train_x.max() == 255
    assert np.bincount(d.valid_y.numpy()).min() >= 35  # stratified
    again = load_digits(16)
    assert torch.equal(d.train_y, again.train_y) and d.train_items == again.train_items
    assert load_digits(8).train_x.shape[-1] == 8


def test_folder_layouts(tmp_path):
    split = load_folder(make_image_folder(tmp_path / "a"))
    assert (len(split.train_y), len(split.valid_y)) == (48, 18) and split.classes == ["cat", "dog", "owl"]
    tree = load_folder(make_image_folder(tmp_path / "b", split=False), valid_pct=0.25, seed=1)
    assert len(tree.valid_y) == 3 * round(0.25 * 22) and tree.img_size == 8 and tree.channels == 3
    other = load_folder(tmp_path / "b", valid_pct=0.25, seed=2)
    assert other.valid_items != tree.valid_items
    # CIFAR-100's coarse/fine nesting: the class is the folder path
    nested = tmp_path / "c"
    make_image_folder(nested / "train" / "fish", classes=("trout", "shark"), per_class=3, held_out=0, split=False)
    make_image_folder(nested / "test" / "fish", classes=("trout", "shark"), per_class=2, held_out=0, split=False)
    d = load_folder(nested)
    assert d.classes == ["fish/shark", "fish/trout"] and len(d.valid_y) == 4
    assert load_data(nested, img_size=12).img_size == 12


def test_augment_batch_crops_within_the_padding_and_flips():
    x = torch.arange(4 * 1 * 6 * 6, dtype=torch.uint8).view(4, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, pad=2, flip=False, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(4):
        # each output is a shifted window of the zero-padded input
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(out[i], padded[:, a:a + 6, b:b + 6]) for a in range(5) for b in range(5))
    flipped = augment_batch(x, pad=0, flip=True, generator=torch.Generator().manual_seed(1))
    for i in range(4):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    same = augment_batch(x, 2, True, torch.Generator().manual_seed(5))
    assert torch.equal(same, augment_batch(x, 2, True, torch.Generator().manual_seed(5)))


def test_tensor_loader_order_depends_on_seed_and_epoch_only():
    x = torch.randint(0, 255, (50, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(50)
    dl = TensorDL(ImageTensors(x, y), bs=16, shuffle=True, drop_last=True, augment="crop", seed=3)
    assert len(dl) == 3
    first = [yb.clone() for _, yb in dl]
    second = [yb.clone() for _, yb in dl]
    assert not torch.equal(torch.cat(first), torch.cat(second))  # a new order each epoch
    dl2 = TensorDL(ImageTensors(x, y), bs=16, shuffle=True, drop_last=True, augment="crop", seed=3)
    dl2.epoch = 1
    assert torch.equal(torch.cat([yb for _, yb in dl2]), torch.cat(second))
    assert torch.equal(dl2.epoch_indices[:48], torch.cat(second))
    plain = TensorDL(ImageTensors(x, y), bs=16, mean=[0.5], std=[0.25])
    xb, yb = next(iter(plain))
    assert torch.equal(yb, torch.arange(16))
    torch.testing.assert_close(xb, (x[:16].float() / 255 - 0.5) / 0.25)
    assert len(plain) == 4


def test_cifar_resnets_are_timm_models():
    import fastgr.models  # noqa: F401  (registers them)

    for depth, params in ((20, 0.27e6), (56, 0.85e6), (110, 1.7e6)):
        m = timm.create_model(f"cifar_resnet{depth}", num_classes=10)
        n = sum(p.numel() for p in m.parameters())
        assert abs(n - params) / params < 0.03, (depth, n)
    m = timm.create_model("cifar_resnet20", num_classes=7, in_chans=1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert m.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 64, 8, 8)
    assert "cifar_resnet44" in timm.list_models("cifar_*")
    with pytest.raises(ValueError, match="unknown architecture .*did you mean .*cifar_resnet20"):
        create_model("cifar_resnet21", 10)
    assert create_model("resnet18", 3, in_chans=1).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 3)
