"""Cityscapes and VOC 2012 loaders on tiny fake trees: train ids, palette indices, train_aug selection, every error path, the registry."""
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from dropclass.data.datasets import (CITYSCAPES_LAYOUT, DATASETS, VOC_LAYOUT, CityscapesSegmentation, VOCSegmentation,
                                     get_dataset, register_dataset)
from dropclass.data.io import atomic_write_bytes, cityscapes_paths, write_cityscapes_sample, write_image, write_mask
from dropclass.data.labels import CITYSCAPES, VOC, voc_palette

# The Cityscapes label table, written out by hand: labelId -> trainId (255: not evaluated).
TRAIN_ID = {0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4,
            14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
            27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18}
ALL_IDS = torch.arange(34).view(2, 17)
ALL_TRAIN_IDS = torch.tensor([TRAIN_ID[i] for i in range(34)]).view(2, 17)


def write_cs(root, split, city, k, label_ids=ALL_IDS, value=None):
    "One Cityscapes sample written by hand: a flat image and a labelIds mask."
    paths = cityscapes_paths(root, split, city, f"{city}_{k:06d}_000019")
    write_image(paths["image"], torch.full((3, *label_ids.shape), 10 * k if value is None else value, dtype=torch.uint8))
    write_mask(paths["label_ids"], label_ids)
    return paths


@pytest.fixture
def cs(tmp_path):
    root = tmp_path / "cityscapes"
    for city, ks in (("aachen", (1, 0)), ("zurich", (2,))):
        for k in ks: write_cs(root, "train", city, k)
    write_cs(root, "val", "lindau", 0)
    return root


# ---------------------------------------------------------------- Cityscapes

def test_cityscapes_maps_every_label_id_to_its_train_id(cs):
    ds = CityscapesSegmentation(cs, "train")
    image, mask = ds[0]
    assert type(image) is tv_tensors.Image and image.dtype == torch.uint8 and image.shape == (3, 2, 17)
    assert type(mask) is tv_tensors.Mask and mask.dtype == torch.int64
    torch.testing.assert_close(mask.as_subclass(torch.Tensor), ALL_TRAIN_IDS)
    assert ds.labels is CITYSCAPES
    assert (mask[mask != 255] < CITYSCAPES.num_classes).all()


def test_cityscapes_files_sorted_and_images_read_exactly(cs):
    ds = CityscapesSegmentation(cs, "train")
    assert len(ds) == 3 and len(CityscapesSegmentation(cs, "val")) == 1
    assert [p.name for p in ds.images] == ["aachen_000000_000019_leftImg8bit.png", "aachen_000001_000019_leftImg8bit.png",
                                           "zurich_000002_000019_leftImg8bit.png"]
    assert [ds[i][0][0, 0, 0].item() for i in range(3)] == [0, 10, 20]  # PNG is lossless: the values written


def test_cityscapes_ignores_stray_files(cs):
    (cs / "leftImg8bit/train/aachen/notes.txt").write_text("not an image")
    assert len(CityscapesSegmentation(cs, "train")) == 3


def test_cityscapes_load_mask_does_not_read_the_image(cs):
    ds = CityscapesSegmentation(cs, "train")
    ds.images[0].unlink()
    torch.testing.assert_close(ds.load_mask(0).as_subclass(torch.Tensor), ALL_TRAIN_IDS)
    with pytest.raises(FileNotFoundError):
        ds[0]


def test_cityscapes_reads_what_write_cityscapes_sample_wrote(tmp_path):
    train_ids = torch.randint(0, 19, (5, 7))
    train_ids[0, :3] = 255
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    write_cityscapes_sample(tmp_path, "val", "synth", "synth_000000_000000", image, train_ids)
    got_image, got_mask = CityscapesSegmentation(tmp_path, "val")[0]
    torch.testing.assert_close(got_image.as_subclass(torch.Tensor), image)
    torch.testing.assert_close(got_mask.as_subclass(torch.Tensor), train_ids)


def test_cityscapes_applies_the_joint_transform_to_the_contract_types(cs):
    seen = []

    def transforms(image, mask):
        seen.append((type(image), type(mask)))
        return image[:, :, :5].float(), mask[:, :5] + 1000

    image, mask = CityscapesSegmentation(cs, "train", transforms)[0]
    assert seen == [(tv_tensors.Image, tv_tensors.Mask)]
    assert image.dtype == torch.float32 and image.shape == (3, 2, 5)
    torch.testing.assert_close(mask.as_subclass(torch.Tensor), ALL_TRAIN_IDS[:, :5] + 1000)


CS_LAYOUT = re.escape("<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png")
CS_GT_LAYOUT = re.escape("<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png")


@pytest.mark.parametrize("case, message", [
    ("no root", "no Cityscapes root given"),
    ("missing root", r"the Cityscapes root .*nowhere does not exist"),
    ("no images folder", r"leftImg8bit/val is missing \(unzip leftImg8bit_trainvaltest.zip"),
    ("no labels folder", r"gtFine/val is missing \(unzip gtFine_trainvaltest.zip"),
    ("label file missing", r"1 of the 1 images of .*leftImg8bit/val/<city>/ have no label file, "
                           r"e.g. lindau_000000_000019_leftImg8bit.png has no .*gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"),
    ("no images", r"leftImg8bit/val/<city>/ holds no images"),
])
def test_cityscapes_says_what_is_missing(cs, case, message):
    root = cs
    if case == "no root": root = None
    if case == "missing root": root = cs.parent / "nowhere"
    if case == "no images folder": (cs / "leftImg8bit/val").rename(cs / "elsewhere")
    if case == "no labels folder": (cs / "gtFine/val").rename(cs / "elsewhere")
    if case == "label file missing": cityscapes_paths(cs, "val", "lindau", "lindau_000000_000019")["label_ids"].unlink()
    if case == "no images": cityscapes_paths(cs, "val", "lindau", "lindau_000000_000019")["image"].unlink()
    with pytest.raises(FileNotFoundError, match=message) as e:
        CityscapesSegmentation(root, "val")
    assert re.search(CS_LAYOUT, str(e.value)) and re.search(CS_GT_LAYOUT, str(e.value))
    assert "Dataset not found" not in str(e.value)  # not torchvision's message


def test_cityscapes_unknown_split(cs):
    with pytest.raises(ValueError, match="unknown Cityscapes split 'training'; use one of train, val, test"):
        CityscapesSegmentation(cs, "training")


def test_cityscapes_pickles(cs):
    ds = pickle.loads(pickle.dumps(CityscapesSegmentation(cs, "val")))
    torch.testing.assert_close(ds.load_mask(0).as_subclass(torch.Tensor), ALL_TRAIN_IDS)


# ---------------------------------------------------------------- Pascal VOC

VOC_BASE = "VOCdevkit/VOC2012"
# every VOC index, plus the 255 border value
VOC_MASK = torch.tensor(list(range(21)) + [255] * 3).view(4, 6)


def write_voc_mask(root, name, mask, folder="SegmentationClass", bits=8):
    im = Image.fromarray(mask.numpy().astype(np.uint8))  # mode "L"
    if folder == "SegmentationClass": im.putpalette([c for rgb in voc_palette() for c in rgb])  # now mode "P"
    path = Path(root) / VOC_BASE / folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, bits=bits)
    return path


def write_voc_image(root, name, value, shape=(4, 6)):
    image = torch.full((3, *shape), 0, dtype=torch.uint8)
    image[0], image[1], image[2] = value, 255 - value, 128
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=95)
    atomic_write_bytes(Path(root) / VOC_BASE / "JPEGImages" / f"{name}.jpg", buf.getvalue())


def write_voc_list(root, split, lines):
    atomic_write_bytes(Path(root) / VOC_BASE / "ImageSets/Segmentation" / f"{split}.txt", "".join(f"{l}\n" for l in lines).encode())


TRAIN, VAL, SBD = ["2007_000032", "2007_000039"], ["2007_000033"], ["2008_000002", "2008_000003"]


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "voc"
    for k, name in enumerate(TRAIN + VAL + SBD):
        write_voc_image(root, name, 40 * k)
        if name not in SBD: write_voc_mask(root, name, VOC_MASK)
    write_voc_list(root, "train", TRAIN)
    write_voc_list(root, "val", VAL)
    write_voc_list(root, "trainval", TRAIN + VAL)
    return root


def add_sbd(root, masks=True, listing=True, lines=None):
    "The SBD-augmented set: grayscale masks (all class 7 here, to tell them from VOC's) and train_aug.txt."
    if masks:
        for name in TRAIN + SBD: write_voc_mask(root, name, torch.full((4, 6), 7), folder="SegmentationClassAug")
    if listing: write_voc_list(root, "train_aug", lines if lines is not None else TRAIN + SBD)


def test_voc_reads_palette_indices_and_255_borders(voc):
    assert Image.open(Path(voc) / VOC_BASE / "SegmentationClass" / f"{TRAIN[0]}.png").mode == "P"
    ds = VOCSegmentation(voc, "train")
    image, mask = ds[1]
    assert type(image) is tv_tensors.Image and image.dtype == torch.uint8 and image.shape == (3, 4, 6)
    assert type(mask) is tv_tensors.Mask and mask.dtype == torch.int64
    torch.testing.assert_close(mask.as_subclass(torch.Tensor), VOC_MASK)
    torch.testing.assert_close(ds.load_mask(0).as_subclass(torch.Tensor), VOC_MASK)
    expected = torch.tensor([40, 215, 128]).view(3, 1, 1).expand(3, 4, 6)
    assert (image.int() - expected).abs().max() <= 3  # JPEG is lossy, a little
    assert ds.labels is VOC and not ds.augmented
    assert len(VOCSegmentation(voc, "val")) == 1 and len(VOCSegmentation(voc, "trainval")) == 3


def test_voc_reads_low_bit_depth_palette_masks(voc):
    small = torch.tensor([[0, 1, 15], [2, 9, 3]])
    path = write_voc_mask(voc, TRAIN[0], small, bits=4)
    assert path.read_bytes()[24] == 4  # IHDR bit depth: the file really is 4-bit
    torch.testing.assert_close(VOCSegmentation(voc, "train").load_mask(0).as_subclass(torch.Tensor), small)


def test_voc_rejects_rgb_masks(voc):
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(Path(voc) / VOC_BASE / "SegmentationClass" / f"{TRAIN[0]}.png")
    with pytest.raises(ValueError, match="is a RGB image with 3 channels; a label mask has one"):
        VOCSegmentation(voc, "train").load_mask(0)


@pytest.mark.parametrize("augmented, expected", [(None, TRAIN + SBD), (True, TRAIN + SBD), (False, TRAIN)])
def test_voc_train_aug_selection_when_present(voc, augmented, expected):
    add_sbd(voc)
    ds = VOCSegmentation(voc, "train", augmented=augmented)
    assert [p.stem for p in ds.images] == expected
    assert ds.augmented == (expected != TRAIN)
    folder = "SegmentationClassAug" if ds.augmented else "SegmentationClass"
    assert all(p.parent.name == folder for p in ds.targets)
    assert (ds.load_mask(0) == 7).all() == ds.augmented  # SBD's masks, not VOC's
    assert "SBD-augmented" in repr(ds) if ds.augmented else "SBD" not in repr(ds)


def test_voc_train_without_sbd_is_the_plain_train_list(voc):
    ds = VOCSegmentation(voc, "train")
    assert [p.stem for p in ds.images] == TRAIN and not ds.augmented


@pytest.mark.parametrize("split", ["val", "trainval"])
def test_voc_other_splits_ignore_sbd(voc, split):
    add_sbd(voc)
    ds = VOCSegmentation(voc, split)
    assert not ds.augmented and all(p.parent.name == "SegmentationClass" for p in ds.targets)


def test_voc_train_aug_list_in_deeplab_format(voc):
    add_sbd(voc, lines=[f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in TRAIN + SBD] + [""])
    assert [p.stem for p in VOCSegmentation(voc, "train").images] == TRAIN + SBD


VOC_LAYOUT_LINE = re.escape("<root>/VOCdevkit/VOC2012/SegmentationClassAug/<name>.png")


@pytest.mark.parametrize("masks, listing, augmented, message", [
    (False, False, True, r"augmented=True, but the SBD-augmented training set is incomplete: "
                         r".*SegmentationClassAug and .*ImageSets/Segmentation/train_aug.txt are missing"),
    (True, False, True, r"augmented=True, but .* incomplete: .*train_aug.txt is missing"),
    (False, True, True, r"augmented=True, but .* incomplete: .*SegmentationClassAug is missing"),
    (True, False, None, r"SegmentationClassAug exists, but .* incomplete: .*train_aug.txt is missing .*augmented=False"),
    (False, True, None, r"train_aug.txt exists, but .* incomplete: .*SegmentationClassAug is missing .*augmented=False"),
])
def test_voc_incomplete_sbd_is_an_error(voc, masks, listing, augmented, message):
    add_sbd(voc, masks=masks, listing=listing)
    with pytest.raises(FileNotFoundError, match=message) as e:
        VOCSegmentation(voc, "train", augmented=augmented)
    assert re.search(VOC_LAYOUT_LINE, str(e.value))
    assert len(VOCSegmentation(voc, "train", augmented=False)) == 2  # augmented=False never looks at SBD


def test_voc_sbd_mask_missing_for_a_listed_name(voc):
    add_sbd(voc)
    (Path(voc) / VOC_BASE / "SegmentationClassAug" / f"{SBD[1]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of the 4 images of .*train_aug.txt have no label file, e.g. {SBD[1]}.jpg has no"):
        VOCSegmentation(voc, "train")


def test_voc_augmented_needs_the_train_split(voc):
    add_sbd(voc)
    with pytest.raises(ValueError, match="augmented=True selects the augmented training set, so it needs split='train', not 'val'"):
        VOCSegmentation(voc, "val", augmented=True)


def test_voc_unknown_split(voc):
    with pytest.raises(ValueError, match="unknown VOC split 'train_aug'; use one of train, val, trainval"):
        VOCSegmentation(voc, "train_aug")


@pytest.mark.parametrize("case, message", [
    ("no root", "no VOC root given"),
    ("missing root", r"the VOC root .*nowhere does not exist"),
    ("root is VOCdevkit", r"VOCdevkit/VOCdevkit/VOC2012 is missing \(extract VOCtrainval_11-May-2012.tar"),
    ("no JPEGImages", r"VOC2012/JPEGImages is missing"),
    ("no SegmentationClass", r"VOC2012/SegmentationClass is missing"),
    ("no split list", r"ImageSets/Segmentation/train.txt is missing"),
    ("image missing", r"1 of the 2 images of .*train.txt are missing, e.g. .*JPEGImages/2007_000039.jpg"),
    ("mask missing", r"1 of the 2 images of .*train.txt have no label file, e.g. 2007_000039.jpg has no .*SegmentationClass/2007_000039.png"),
    ("empty list", r"train.txt holds no images"),
])
def test_voc_says_what_is_missing(voc, case, message):
    base, root = Path(voc) / VOC_BASE, voc
    if case == "no root": root = None
    if case == "missing root": root = voc.parent / "nowhere"
    if case == "root is VOCdevkit": root = voc / "VOCdevkit"
    if case == "no JPEGImages": (base / "JPEGImages").rename(base / "elsewhere")
    if case == "no SegmentationClass": (base / "SegmentationClass").rename(base / "elsewhere")
    if case == "no split list": (base / "ImageSets/Segmentation/train.txt").unlink()
    if case == "image missing": (base / "JPEGImages/2007_000039.jpg").unlink()
    if case == "mask missing": (base / "SegmentationClass/2007_000039.png").unlink()
    if case == "empty list": write_voc_list(voc, "train", [])
    with pytest.raises(FileNotFoundError, match=message) as e:
        VOCSegmentation(root, "train")
    assert VOC_LAYOUT in str(e.value)
    assert "Dataset not found" not in str(e.value)


def test_voc_pickles(voc):
    ds = pickle.loads(pickle.dumps(VOCSegmentation(voc, "val")))
    torch.testing.assert_close(ds.load_mask(0).as_subclass(torch.Tensor), VOC_MASK)


# ---------------------------------------------------------------- registry

def test_registry_builds_the_built_in_datasets(cs, voc):
    assert {"cityscapes", "voc", "synthetic"} <= set(DATASETS)
    flip = lambda image, mask: (image.flip(-1), mask.flip(-1))
    ds = get_dataset("cityscapes", cs, "val", flip)
    assert type(ds) is CityscapesSegmentation and ds.split == "val" and ds.transforms is flip
    torch.testing.assert_close(ds[0][1].as_subclass(torch.Tensor), ALL_TRAIN_IDS.flip(-1))
    add_sbd(voc)
    assert get_dataset("VOC", voc).augmented and not get_dataset("voc", voc, augmented=False).augmented


def test_registry_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'kitti'; the known ones are cityscapes, .*synthetic, .*voc"):
        get_dataset("kitti", "/data")


def test_registry_errors_of_the_dataset_reach_the_caller():
    with pytest.raises(FileNotFoundError, match="no Cityscapes root given"):
        get_dataset("cityscapes")


def test_register_dataset(monkeypatch, voc):
    monkeypatch.setattr("dropclass.data.datasets.DATASETS", dict(DATASETS))  # leave the real registry as it was
    from dropclass.data import datasets

    @register_dataset("First_VOC_Image")
    def first(root, split, transforms, **kwargs):
        return torch.utils.data.Subset(VOCSegmentation(root, split, transforms, **kwargs), [0])

    assert datasets.DATASETS["first_voc_image"] is first and "first_voc_image" not in DATASETS
    assert len(get_dataset("first_voc_image", voc, "train", augmented=False)) == 1
