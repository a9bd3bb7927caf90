"""Synthetic street scenes: determinism, the data contract, imbalance, co-location rules, colour ambiguity, the writer."""
import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from dropclass.data.io import cityscapes_paths, read_image, read_mask
from dropclass.data.labels import CITYSCAPES, cityscapes_train_ids
from dropclass.data.synthetic import (BICYCLE, CAR, MOTORCYCLE, PERSON, RIDER, ROAD, SIDEWALK, SyntheticStreets,
                                      colour_only_accuracy, render_street, resting_on, support, write_synthetic)


@pytest.fixture(scope="module")
def train_stats():
    ds = SyntheticStreets(length=400)
    pixels, images = np.zeros(19), np.zeros(19)
    sup = np.zeros((19, 19), np.int64)
    for i in range(len(ds)):
        m = ds.load_mask(i).numpy()
        c = np.bincount(m.ravel(), minlength=256)
        assert c[19:].sum() == 0  # only train ids
        pixels += c[:19]
        images += c[:19] > 0
        sup += support(m)
    return pixels / pixels.sum(), images / len(ds), sup


def test_scenes_are_deterministic_per_seed_split_index():
    a = render_street(3, 7, "train")
    np.testing.assert_array_equal(a[0], render_street(3, 7, "train")[0])
    np.testing.assert_array_equal(a[1], render_street(3, 7, "train")[1])
    assert not np.array_equal(a[0], render_street(4, 7, "train")[0])
    assert not np.array_equal(a[0], render_street(3, 8, "train")[0])
    assert not np.array_equal(a[0], render_street(3, 7, "val")[0])


def test_dataset_contract_and_workers():
    ds = SyntheticStreets(split="val", length=6)
    image, mask = ds[4]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 128, 256)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (128, 256)
    assert torch.equal(ds.load_mask(4), mask) and ds.labels is CITYSCAPES
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[4][0], image)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert torch.equal(batches[1][0][1], image) and torch.equal(batches[1][1][1], mask)


def test_rendered_scenes_are_cached_within_the_budget(monkeypatch):
    import dropclass.data.synthetic as syn
    calls = []
    real = syn.render_street
    monkeypatch.setattr(syn, "render_street", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    ds = SyntheticStreets(split="val", length=5, size=(64, 128))
    calls.clear()
    first = ds[3]
    first[0][:] = 0  # a caller writing into what it got does not change the cache
    again = ds[3]
    assert calls == [3]  # rendered once, read from the cache the second time
    img, lab = real(0, 3, "val", (64, 128))
    assert torch.equal(again[0], torch.from_numpy(img)) and torch.equal(again[1], torch.from_numpy(lab).long())
    assert torch.equal(ds.load_mask(3), again[1]) and calls == [3]
    assert torch.equal(ds[-2][0], again[0]) and calls == [3]  # a negative index is the same scene
    one = img.nbytes + lab.nbytes
    small = SyntheticStreets(split="val", length=5, size=(64, 128), cache_mb=1.5 * one / 2**20)  # room for one scene
    calls.clear()
    for i in (0, 1, 0, 1): small[i]
    assert calls == [0, 1, 1]
    none = SyntheticStreets(split="val", length=5, size=(64, 128), cache_mb=0)
    calls.clear()
    none[2], none[2]
    assert calls == [2, 2]
    with pytest.raises(ValueError, match="cache_mb"): SyntheticStreets(cache_mb=float("nan"))


def test_transforms_are_applied_jointly():
    flip = lambda img, m: (img.flip(-1), m.flip(-1))
    plain, flipped = SyntheticStreets(length=2), SyntheticStreets(length=2, transforms=flip)
    assert torch.equal(flipped[1][0], plain[1][0].flip(-1)) and torch.equal(flipped[1][1], plain[1][1].flip(-1))


def test_other_sizes():
    img, lab = render_street(0, 1, size=(256, 512))
    assert img.shape == (3, 256, 512) and lab.shape == (256, 512) and len(np.unique(lab)) > 5


def test_imbalance_follows_cityscapes(train_stats):
    share, in_images, _ = train_stats
    assert (share > 0).all() and (in_images > 0).all()  # all 19 classes occur
    ours_rarest = set(np.argsort(share)[:9].tolist())
    assert ours_rarest == set(CITYSCAPES.rarest())  # the same nine rarest classes as Cityscapes
    common = CITYSCAPES.by_share()[-6:]  # sky, sidewalk, car, vegetation, building, road
    assert set(np.argsort(share)[-6:].tolist()) == set(common)
    assert in_images[CITYSCAPES.rarest()].max() < in_images[common].min()  # rare in images as well
    ranks_ours = np.argsort(np.argsort(share))
    ranks_cs = np.argsort(np.argsort([CITYSCAPES.pixel_share[n] for n in CITYSCAPES.classes]))
    assert np.corrcoef(ranks_ours, ranks_cs)[0, 1] > 0.9  # Spearman rank correlation


def _support(split, n=200, **kw):
    ds = SyntheticStreets(split=split, length=n, **kw)
    return sum(support(ds.load_mask(i)) for i in range(n))


def test_colocation_rules_hold_and_the_counterfactual_split_breaks_them(train_stats):
    biased = train_stats[2]
    broken = _support("counterfactual")
    two_wheelers = [BICYCLE, MOTORCYCLE]
    assert resting_on(biased, RIDER, two_wheelers) > 0.8 and resting_on(broken, RIDER, two_wheelers) < 0.1
    assert resting_on(biased, PERSON, [SIDEWALK]) > 0.65 and resting_on(broken, PERSON, [ROAD]) > 0.7
    assert resting_on(biased, CAR, [ROAD]) > 0.9 and resting_on(broken, CAR, [ROAD]) < 0.4
    assert resting_on(biased, BICYCLE, [ROAD]) > 0.8 and resting_on(broken, BICYCLE, [SIDEWALK]) > 0.5


def test_colocation_knob_is_monotone():
    values = [resting_on(_support("val", 150, colocation=c), PERSON, [SIDEWALK]) for c in (0.0, 0.5, 1.0)]
    assert values[0] < values[1] < values[2]


def test_support_counts_by_hand():
    lab = np.array([[RIDER, RIDER, 10], [BICYCLE, ROAD, 10], [ROAD, ROAD, ROAD]])
    s = support(lab)
    assert s[RIDER, BICYCLE] == 1 and s[RIDER, ROAD] == 1 and s[BICYCLE, ROAD] == 1 and s[10, ROAD] == 1
    assert s.sum() == 4


def test_colour_alone_cannot_separate_confusable_classes():
    train = [render_street(0, i) for i in range(120)]
    test = [render_street(0, i, "val") for i in range(60)]
    assert colour_only_accuracy(train, test, [PERSON, RIDER]) < 0.65
    assert colour_only_accuracy(train, test, [15, 16, 14]) < 0.55  # bus, train, truck
    # the estimator itself can succeed where colour does decide: sky against road
    assert colour_only_accuracy(train, test, [10, ROAD]) > 0.75


def test_writer_is_readable_as_cityscapes_and_resumable(tmp_path):
    from torchvision.datasets import Cityscapes
    write_synthetic(tmp_path, "train", length=4, progress=False)
    write_synthetic(tmp_path / "cf", "counterfactual", length=2, progress=False)
    cs = Cityscapes(tmp_path, split="train", target_type="semantic")
    assert len(cs) == 4
    ds = SyntheticStreets(length=4)
    for i in range(4):
        stem = f"synthetic_000000_{i:06d}"
        p = cityscapes_paths(tmp_path, "train", "synthetic", stem)
        assert torch.equal(read_image(p["image"]), ds[i][0])
        assert torch.equal(cityscapes_train_ids(read_mask(p["label_ids"])), ds.load_mask(i))
        assert torch.equal(read_mask(p["train_ids"]), ds.load_mask(i))
    assert len(Cityscapes(tmp_path / "cf", split="val", target_type="semantic")) == 2
    assert json.loads((tmp_path / "cf" / "index_counterfactual.json").read_text())["colocation"] == 0.0
    p = cityscapes_paths(tmp_path, "train", "synthetic", "synthetic_000000_000002")
    p["image"].unlink()  # an interrupted run: one file missing
    before = cityscapes_paths(tmp_path, "train", "synthetic", "synthetic_000000_000001")["image"].stat().st_mtime_ns
    write_synthetic(tmp_path, "train", length=4, progress=False)
    assert p["image"].is_file()
    assert cityscapes_paths(tmp_path, "train", "synthetic", "synthetic_000000_000001")["image"].stat().st_mtime_ns == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="test"), "split must be one of"),
    (dict(colocation=1.5), r"colocation must be in \[0, 1\]"),
    (dict(size=(16, 16)), "at least 32x32"),
    (dict(length=0), "length must be positive"),
    (dict(root="/data"), "load them as Cityscapes"),
])
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticStreets(**kwargs)


def _rider_regions(split, n):
    "Rider regions (8-connected) and how many of them touch a bicycle or motorcycle region."
    from scipy import ndimage
    total = touching = 0
    for i in range(n):
        lab = render_street(0, i, split)[1]
        regions, k = ndimage.label(lab == RIDER, structure=np.ones((3, 3)))
        near_wheels = ndimage.binary_dilation((lab == BICYCLE) | (lab == MOTORCYCLE), structure=np.ones((3, 3)))
        touched = np.unique(regions[near_wheels & (regions > 0)])
        total, touching = total + k, touching + len(touched)
    return total, touching


def test_every_rider_region_touches_a_two_wheeler():
    total, touching = _rider_regions("train", 300)
    assert total >= 20 and touching == total
    total, touching = _rider_regions("counterfactual", 300)
    assert total >= 5 and touching <= total // 2


def test_scenes_use_one_blas_thread_and_leave_the_setting_as_it_was(monkeypatch):
    from threadpoolctl import threadpool_info
    import dropclass.data.synthetic as syn
    # numpy's own BLAS (its wheel ships it in numpy.libs); other libraries loaded later (scipy's) are not the scenes'
    blas = lambda: [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas" and "numpy" in d["filepath"]]
    before, real, seen = blas(), syn.one_blas_thread, []
    with real(): inside = blas()
    assert inside and all(n == 1 for n in inside)
    monkeypatch.setattr(syn, "one_blas_thread", lambda: seen.append(1) or real())
    render_street(0, 3)
    assert seen, "render_street made its matrix products without the one-thread limit"
    assert blas() == before
