"""Erasing a class, the I* datasets, and I* written to disk in the Cityscapes layout."""
import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.datasets import Cityscapes

from dropclass.data.io import cityscapes_paths, read_image, read_mask
from dropclass.data.labels import CITYSCAPES, CITYSCAPES_TRAINID_TO_ID, LabelSet, cityscapes_train_ids
from dropclass.data.unbiased import (FILLS, IMAGENET_MEAN_RGB, ErasedClass, erase_class, inpaint, unbiased_sets,
                                     write_unbiased)

H, W = 12, 20
ROAD, PERSON, CAR, MOTO = 0, 11, 13, 17


def scene(i):
    "Noisy image and train ids: road below, building above, a person and a motorcycle in images 0 and 2 only."
    g = torch.Generator().manual_seed(i)
    mask = torch.full((H, W), 2)
    mask[6:] = ROAD
    mask[0, :3] = 255
    mask[7:10, 12:16] = CAR
    if i != 1:
        mask[4:9, 3:5] = PERSON
        mask[8:11, 2:7] = MOTO
    image = torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


class Scenes(Dataset):
    "Three samples following the data contract, with Cityscapes train ids; counts reads of samples."
    labels = CITYSCAPES

    def __init__(self, n=3, transforms=None):
        self.n, self.transforms, self.reads = n, transforms, 0

    def __len__(self): return self.n
    def __getitem__(self, i):
        self.reads += 1
        return scene(i)
    def load_mask(self, i): return scene(i)[1]


TWO = LabelSet("two", ("ground", "thing"), ((0, 0, 0), (255, 255, 255)))


class TwoClass(Scenes):
    "The same scenes in a two-class label set that is not Cityscapes."
    labels = TWO
    def __getitem__(self, i):
        image, mask = scene(i)
        return image, tv_tensors.Mask(torch.where(mask == 255, 255, (mask >= 11).long()))


def flip(image, mask): return image.flip(-1), mask.flip(-1)


# erase_class

@pytest.mark.parametrize("fill", FILLS)
def test_erase_class_changes_only_the_class(fill):
    image, mask = scene(0)
    hole = mask == MOTO
    im, m = erase_class(image, mask, MOTO, fill=fill)
    assert type(im) is tv_tensors.Image and type(m) is tv_tensors.Mask
    assert im.dtype == torch.uint8 and m.dtype == torch.int64 and im.shape == image.shape and m.shape == mask.shape
    assert (m[hole] == 255).all() and (m == MOTO).sum() == 0
    assert torch.equal(m[~hole], mask[~hole])
    assert torch.equal(im[:, ~hole], image[:, ~hole])
    assert (im[:, hole] != image[:, hole]).any(0).float().mean() > 0.9  # (almost) every erased pixel changed
    assert (mask == MOTO).sum() == 15 and torch.equal(image, scene(0)[0])  # inputs untouched


@pytest.mark.parametrize("fill", FILLS)
def test_erase_absent_class_returns_the_sample_unchanged(fill):
    image, mask = scene(1)
    im, m = erase_class(image, mask, MOTO, fill=fill)
    assert torch.equal(im, image) and torch.equal(m, mask)


def test_mean_fill_is_the_constant_colour():
    image, mask = scene(0)
    im, _ = erase_class(image, mask, MOTO, fill="mean")
    assert im[:, mask == MOTO].T.unique(dim=0).tolist() == [list(IMAGENET_MEAN_RGB)]
    im, _ = erase_class(image, mask, MOTO, fill="mean", color=(1, 2, 3))
    assert im[:, mask == MOTO].T.unique(dim=0).tolist() == [[1, 2, 3]]


def test_inpaint_of_a_uniform_surrounding_is_that_colour():
    image = torch.empty(3, 16, 24, dtype=torch.uint8)
    image[:] = torch.tensor([10, 200, 90], dtype=torch.uint8)[:, None, None]
    hole = torch.zeros(16, 24, dtype=torch.bool)
    hole[3:11, 5:19] = True
    image[:, hole] = 255
    out = inpaint(image, hole)
    assert out[:, hole].T.unique(dim=0).tolist() == [[10, 200, 90]]


def test_inpaint_reproduces_a_linear_ramp():
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(64.0), indexing="ij")
    ramp = torch.stack([3 * yy, 2 * xx, yy + 2 * xx]).clamp(0, 255).to(torch.uint8)
    hole = torch.zeros(40, 64, dtype=torch.bool)
    hole[8:30, 10:50] = True
    hole[33:36, 5:9] = True
    err = (inpaint(ramp, hole).float() - ramp.float())[:, hole].abs()
    assert err.max() <= 1 and err.mean() < 0.05
    assert (inpaint(ramp, hole, iters=0).float() - ramp.float())[:, hole].abs().max() > 1  # the sweeps matter


def test_inpaint_whole_image_and_borders():
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert inpaint(image, torch.ones(5, 7, dtype=torch.bool), color=(4, 5, 6))[:, 2, 3].tolist() == [4, 5, 6]
    hole = torch.zeros(5, 7, dtype=torch.bool)
    hole[:, 0] = True  # a column on the border
    out = inpaint(image, hole)
    assert torch.equal(out[:, :, 1:], image[:, :, 1:])
    one = torch.zeros(1, 1, dtype=torch.bool)
    assert torch.equal(inpaint(image[:, :1, :1], one), image[:, :1, :1])


def test_erase_class_errors():
    image, mask = scene(0)
    with pytest.raises(ValueError, match="unknown fill 'blur'; use one of 'inpaint', 'mean'"): erase_class(image, mask, MOTO, fill="blur")
    with pytest.raises(ValueError, match="other than the ignore index"): erase_class(image, mask, 255)
    with pytest.raises(ValueError, match=r"in \[0, 255\)"): erase_class(image, mask, -1)
    with pytest.raises(ValueError, match="three integers"): erase_class(image, mask, MOTO, color=(0, 0, 300))
    with pytest.raises(ValueError, match="uint8 image"): erase_class(image.float(), mask, MOTO)
    with pytest.raises(ValueError, match="integer mask"): erase_class(image, mask[:-1], MOTO)


# I* datasets

def test_erased_class_follows_the_contract():
    base = Scenes()
    ds = ErasedClass(base, "motorcycle")
    assert len(ds) == 3 and ds.labels is CITYSCAPES and ds.transforms is None and ds.class_id == MOTO
    for i in range(3):
        image, mask = ds[i]
        expected = erase_class(*scene(i), MOTO)
        assert torch.equal(image, expected[0]) and torch.equal(mask, expected[1])
        assert torch.equal(ds.load_mask(i), mask) and type(ds.load_mask(i)) is tv_tensors.Mask


def test_erased_class_applies_transforms_after_erasing():
    ds = ErasedClass(Scenes(), MOTO, transforms=flip)
    _, mask = ds[0]
    assert torch.equal(mask, erase_class(*scene(0), MOTO)[1].flip(-1))


def test_erased_class_is_picklable_and_loads_in_workers():
    ds = ErasedClass(Scenes(), MOTO, fill="mean")
    assert torch.equal(pickle.loads(pickle.dumps(ds))[0][1], ds[0][1])
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert torch.equal(batches[0][1][2], ds[2][1])


def test_erased_class_errors():
    with pytest.raises(ValueError, match="transforms=None"): ErasedClass(Scenes(transforms=flip), MOTO)
    with pytest.raises(ValueError, match=r"class id 19 is out of range \[0, 19\)"): ErasedClass(Scenes(), 19)
    with pytest.raises(ValueError, match="out of range"): ErasedClass(Scenes(), -1)
    with pytest.raises(ValueError, match="not a cityscapes class"): ErasedClass(Scenes(), "bike")
    with pytest.raises(ValueError, match="unknown fill"): ErasedClass(Scenes(), MOTO, fill="noise")
    with pytest.raises(ValueError, match="empty"): ErasedClass(Scenes(0), MOTO)
    nolabels = Scenes()
    nolabels.labels = None
    with pytest.raises(ValueError, match="no `labels`"): ErasedClass(nolabels, MOTO)


def test_unbiased_sets():
    sets = unbiased_sets(Scenes())
    assert list(sets) == list(range(19)) and all(s.class_id == c for c, s in sets.items())
    some = unbiased_sets(Scenes(), ["rider", ROAD, "rider"], fill="mean", transforms=flip)
    assert list(some) == [12, ROAD] and some[ROAD].fill == "mean" and some[ROAD].transforms is flip
    with pytest.raises(ValueError, match="empty"): unbiased_sets(Scenes(0))


# I* on disk

def stem(i): return f"unbiased_{i:06d}_000000"


def test_write_unbiased_cityscapes_layout(tmp_path):
    base = Scenes()
    roots = write_unbiased(base, tmp_path, classes=["motorcycle", ROAD], progress=False)
    assert roots == {MOTO: tmp_path / "motorcycle", ROAD: tmp_path / "road"}
    assert base.reads == 3  # each sample read once for all classes
    for c, root in roots.items():
        for i in range(3):
            p = cityscapes_paths(root, "val", "unbiased", stem(i))
            assert all(f.is_file() for f in p.values())
            image, mask = scene(i)
            train_ids, label_ids = read_mask(p["train_ids"]), read_mask(p["label_ids"])
            assert torch.equal(train_ids, mask.masked_fill(mask == c, 255))
            assert torch.equal(label_ids, CITYSCAPES_TRAINID_TO_ID[train_ids].long())
            assert torch.equal(read_image(p["image"]), erase_class(image, mask, c)[0])
            assert torch.equal(read_image(p["image"])[:, mask != c], image[:, mask != c])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["index.json", "motorcycle", "road"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_written_copies_read_with_torchvision(tmp_path):
    write_unbiased(Scenes(), tmp_path, classes=[PERSON], fill="mean", progress=False)
    cs = Cityscapes(tmp_path / "person", split="val", target_type="semantic")
    assert len(cs) == 3
    k = [i for i, f in enumerate(cs.images) if stem(2) in f]  # torchvision lists files unsorted
    assert len(k) == 1
    _, target = cs[k[0]]
    mask = scene(2)[1]
    ids = cityscapes_train_ids(torch.as_tensor(np.array(target)))
    assert torch.equal(ids, mask.masked_fill(mask == PERSON, 255))


def test_index_json(tmp_path):
    write_unbiased(Scenes(), tmp_path, classes=[MOTO], fill="mean", progress=False)
    write_unbiased(Scenes(), tmp_path, classes=["traffic light"], fill="mean", progress=False)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["fill"] == "mean" and index["color"] == list(IMAGENET_MEAN_RGB)
    assert index["labels"] == "cityscapes" and index["source"] == {"type": "Scenes", "size": 3} and index["split"] == "val"
    assert index["classes"] == [{"id": 6, "name": "traffic light", "folder": "traffic_light", "complete": True},
                                {"id": MOTO, "name": "motorcycle", "folder": "motorcycle", "complete": True}]
    assert (tmp_path / "traffic_light" / "leftImg8bit" / "val").is_dir()


def test_rerun_skips_written_samples(tmp_path):
    write_unbiased(Scenes(), tmp_path, classes=[MOTO, CAR], progress=False)
    files = sorted(tmp_path.rglob("*.png"))
    assert len(files) == 2 * 3 * 3
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = Scenes()
    write_unbiased(again, tmp_path, classes=[MOTO, CAR], progress=False)
    assert again.reads == 0  # nothing read, nothing written
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    gone = cityscapes_paths(tmp_path / "car", "val", "unbiased", stem(1))["label_ids"]
    gone.unlink()
    write_unbiased(again, tmp_path, classes=[MOTO, CAR], progress=False)
    assert again.reads == 1 and gone.is_file()
    changed = {f for f in files if f.stat().st_mtime_ns != stamps[f]}
    assert changed == set(cityscapes_paths(tmp_path / "car", "val", "unbiased", stem(1)).values())


def test_rerun_with_other_settings_is_refused(tmp_path):
    write_unbiased(Scenes(), tmp_path, classes=[MOTO], progress=False)
    with pytest.raises(ValueError, match="other settings \\(fill: 'inpaint'\\)"):
        write_unbiased(Scenes(), tmp_path, classes=[MOTO], fill="mean", progress=False)
    with pytest.raises(ValueError, match="source"):
        write_unbiased(Scenes(2), tmp_path, classes=[MOTO], progress=False)


def test_other_label_sets_write_train_ids_only(tmp_path):
    roots = write_unbiased(TwoClass(), tmp_path, classes=["thing"], progress=False)
    gt = sorted(p.name for p in (roots[1] / "gtFine" / "val" / "unbiased").iterdir())
    assert gt == [f"{stem(i)}_gtFine_labelTrainIds.png" for i in range(3)]
    _, mask = TwoClass()[0]
    written = read_mask(cityscapes_paths(roots[1], "val", "unbiased", stem(0))["train_ids"])
    assert torch.equal(written, mask.masked_fill(mask == 1, 255))
    assert json.loads((tmp_path / "index.json").read_text())["files"] == ["leftImg8bit", "gtFine_labelTrainIds"]


def test_workers_write_the_same_files(tmp_path):
    write_unbiased(Scenes(), tmp_path / "a", classes=[MOTO, PERSON], progress=False)
    write_unbiased(Scenes(), tmp_path / "b", classes=[MOTO, PERSON], progress=False, num_workers=2)
    a, b = sorted((tmp_path / "a").rglob("*.png")), sorted((tmp_path / "b").rglob("*.png"))
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_write_unbiased_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"): write_unbiased(Scenes(0), tmp_path, progress=False)
    with pytest.raises(ValueError, match="out of range"): write_unbiased(Scenes(), tmp_path, classes=[42], progress=False)
    with pytest.raises(ValueError, match="unknown fill"): write_unbiased(Scenes(), tmp_path, fill="blur", progress=False)
    with pytest.raises(ValueError, match="transforms=None"): write_unbiased(Scenes(transforms=flip), tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written before the arguments are checked
