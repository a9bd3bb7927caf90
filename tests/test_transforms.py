"""Joint transforms: labels survive resampling, image and mask stay aligned, padding, crop size, seeds, scale factors, batching."""
import pickle

import pytest
import torch
import torch.nn.functional as nnf
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from dropclass.data.datasets import CityscapesSegmentation
from dropclass.data.io import write_cityscapes_sample
from dropclass.data.labels import CITYSCAPES, colorize
from dropclass.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, JointTransform, RandomScale, denormalize,
                                       eval_transforms, train_transforms)

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # no normalisation: the image stays in [0, 1]
WHITE = len(CITYSCAPES.palette)  # index of the colour given to 255
COLOURS = torch.tensor(CITYSCAPES.palette + ((255, 255, 255),), dtype=torch.float32) / 255  # (20, 3)


def scene(h=48, w=64):
    "Rectangles of five classes and a 255 patch; the image is painted in each pixel's class colour."
    m = torch.zeros(h, w, dtype=torch.int64)
    m[: h // 3] = 10
    m[h // 3 : h // 2, : w // 2] = 2
    m[h // 2 : 3 * h // 4, w // 4 : w // 2] = 13
    m[h // 4 : 3 * h // 4, 3 * w // 4 :] = 11
    m[-5:, :9] = 255
    image = colorize(m, CITYSCAPES, (255, 255, 255)).permute(2, 0, 1).contiguous()
    return tv_tensors.Image(image), tv_tensors.Mask(m)


def noisy(h=40, w=60, values=(0, 3, 7, 18)):
    "A mask whose neighbours differ everywhere: any interpolation but nearest would invent new values."
    mask = torch.tensor(values)[torch.randint(0, len(values), (h, w))]
    return tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8)), tv_tensors.Mask(mask)


def interior(mask, r=2):
    "Pixels whose (2r+1)^2 neighbourhood lies inside the mask and holds one label (255 excluded)."
    m = mask.float()[None, None]
    pool = lambda x: nnf.max_pool2d(x, 2 * r + 1, 1)
    out = torch.zeros(mask.shape, dtype=torch.bool)
    out[r:-r, r:-r] = (pool(m) == -pool(-m))[0, 0]
    return out & (mask != 255)


def misaligned(image, mask):
    "Pixels, away from label borders, where the image's colour is not the colour of the mask's label."
    expected = COLOURS[torch.where(mask == 255, WHITE, mask)].permute(2, 0, 1)  # (3, H, W)
    inside = interior(mask)
    assert inside.sum() > 100, "too few interior pixels to check alignment"
    return ((image - expected).abs().amax(0) > 0.02) & inside


# ---------------------------------------------------------------- labels and alignment

@pytest.mark.parametrize("seed", range(6))
def test_masks_keep_their_values_through_scale_crop_flip(seed):
    torch.manual_seed(seed)
    image, mask = noisy()
    t = train_transforms(crop_size=(50, 50), scale_range=(0.5, 2.0), hflip=0.5)
    for _ in range(5):
        _, out = t(image, mask)
        assert set(out.unique().tolist()) <= {0, 3, 7, 18, 255}
        assert not set(out.unique().tolist()) <= {255}


def test_bilinear_masks_would_be_caught():
    "The check above can fail: resizing the same mask bilinearly invents values."
    _, mask = noisy()
    resized = nnf.interpolate(mask[None, None].float(), scale_factor=1.37, mode="bilinear").round().long()
    assert not set(resized.unique().tolist()) <= {0, 3, 7, 18, 255}


@pytest.mark.parametrize("seed", range(12))
def test_image_and_mask_stay_aligned(seed):
    torch.manual_seed(seed)
    image, mask = scene()
    x, y = train_transforms(crop_size=(40, 72), scale_range=(0.5, 2.0), hflip=0.5, **RAW)(image, mask)
    assert misaligned(x, y).sum() == 0


def test_alignment_check_catches_a_misaligned_pair():
    image, mask = scene()
    x, y = eval_transforms(**RAW)(image, mask)
    assert misaligned(x, y).sum() == 0
    assert misaligned(x.flip(-1), y).sum() > 100  # an image flipped alone
    assert misaligned(x.roll(3, -1), y).sum() > 10  # or shifted by 3 pixels


def test_flip_moves_image_and_mask_together():
    image, mask = scene()
    x, y = train_transforms(crop_size=None, scale_range=None, hflip=1.0, **RAW)(image, mask)
    torch.testing.assert_close(y, mask.as_subclass(torch.Tensor).flip(-1))
    torch.testing.assert_close(x, image.as_subclass(torch.Tensor).flip(-1) / 255)
    x, y = train_transforms(crop_size=None, scale_range=None, hflip=0.0, **RAW)(image, mask)
    torch.testing.assert_close(y, mask.as_subclass(torch.Tensor))


# ---------------------------------------------------------------- padding and crop size

@pytest.mark.parametrize("ignore_index", [255, 250])
def test_padding_is_black_in_the_image_and_ignore_in_the_mask(ignore_index):
    image, mask = scene(30, 40)
    mask[mask == 255] = 1  # so that every ignore value in the output is padding
    x, y = train_transforms(crop_size=(50, 70), scale_range=None, hflip=0, ignore_index=ignore_index, **RAW)(image, mask)
    pad = y == ignore_index
    assert pad.sum() == 50 * 70 - 30 * 40
    assert x[:, pad].abs().max() == 0
    rows, cols = (~pad).nonzero().unbind(1)
    r, c = rows.min().item(), cols.min().item()
    assert (rows.max() - r, cols.max() - c) == (29, 39)  # the whole scene, in one piece
    torch.testing.assert_close(y[r : r + 30, c : c + 40], mask.as_subclass(torch.Tensor))
    torch.testing.assert_close(x[:, r : r + 30, c : c + 40], image.as_subclass(torch.Tensor) / 255)


def test_padding_is_normalised_with_the_image():
    image, mask = scene(30, 40)
    mask[mask == 255] = 1
    x, y = train_transforms(crop_size=(40, 40), scale_range=None, hflip=0)(image, mask)
    expected = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    pad = y == 255
    assert pad.sum() == 40 * 40 - 30 * 40
    torch.testing.assert_close(x[:, pad].T, expected.expand(int(pad.sum()), 3))


@pytest.mark.parametrize("size", [(20, 30), (48, 64), (100, 40), (30, 200)])
@pytest.mark.parametrize("crop", [(32, 48), 40])
def test_crop_size(size, crop):
    image, mask = scene(*size)
    x, y = train_transforms(crop_size=crop, scale_range=(0.5, 2.0))(image, mask)
    expected = (crop, crop) if isinstance(crop, int) else crop
    assert x.shape == (3, *expected) and y.shape == expected
    assert x.dtype == torch.float32 and y.dtype == torch.int64


# ---------------------------------------------------------------- randomness

def test_same_seed_same_sample_other_seed_other_sample():
    image, mask = scene()
    t = train_transforms(crop_size=(32, 40))
    outs = []
    for seed in (0, 0, 1, 2, 3):
        torch.manual_seed(seed)
        outs.append(t(image, mask))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    assert any(o[0].shape != outs[0][0].shape or not torch.equal(o[0], outs[0][0]) for o in outs[2:])


def test_scale_factors_are_uniform_on_the_range():
    image, mask = noisy(100, 100)
    rs = RandomScale((0.5, 2.0))
    factors = []
    for _ in range(400):
        x, y = rs(image, mask)
        assert x.shape[-2:] == y.shape
        assert abs(y.shape[0] - y.shape[1]) <= 1  # one factor for both sides
        factors.append(y.shape[0] / 100)
    f = torch.tensor(factors)
    assert 0.495 <= f.min() < 0.55 and 1.95 < f.max() <= 2.005
    assert abs(f.mean() - 1.25) < 0.07  # uniform mean; the standard error of 400 draws is 0.022
    assert abs((f < 0.875).float().mean() - 0.25) < 0.07  # a quarter of the range, a quarter of the draws


def test_scale_is_relative_to_each_image():
    for h, w in [(20, 30), (60, 16)]:
        image, mask = noisy(h, w)
        x, y = RandomScale((0.75, 0.75))(image, mask)
        assert y.shape == (round(0.75 * h), round(0.75 * w)) and x.shape[-2:] == y.shape


def test_random_scale_checks_its_range():
    with pytest.raises(ValueError, match="0 < low <= high"):
        RandomScale((2.0, 0.5))
    with pytest.raises(ValueError, match="0 < low <= high"):
        RandomScale((0.0, 1.0))


# ---------------------------------------------------------------- types, eval, denormalize

def test_plain_tensors_are_treated_as_image_and_mask():
    image, mask = scene()
    t = train_transforms(crop_size=(32, 40))
    torch.manual_seed(5)
    a = t(image, mask)
    torch.manual_seed(5)
    b = t(image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).to(torch.uint8))
    for u, v in zip(a, b):
        assert type(u) is torch.Tensor and type(v) is torch.Tensor
        torch.testing.assert_close(u, v)


def test_eval_transforms():
    image, mask = scene()
    x, y = eval_transforms()(image, mask)
    torch.testing.assert_close(y, mask.as_subclass(torch.Tensor))
    expected = (image.float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected.as_subclass(torch.Tensor))
    x, y = eval_transforms(size=(24, 32))(image, mask)
    assert x.shape == (3, 24, 32) and y.shape == (24, 32) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= set(mask.unique().tolist())
    torch.testing.assert_close(y, mask.as_subclass(torch.Tensor)[::2, ::2])  # halving by nearest: every other pixel


def test_denormalize_inverts_normalisation():
    image, mask = scene()
    x, _ = eval_transforms()(image, mask)
    torch.testing.assert_close(denormalize(x), image.as_subclass(torch.Tensor))
    mean, std = (0.5, 0.4, 0.3), (0.1, 0.2, 0.3)
    xs = torch.stack([eval_transforms(mean, std)(image, mask)[0]] * 2)
    out = denormalize(xs, mean, std)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 48, 64)
    torch.testing.assert_close(out[1], image.as_subclass(torch.Tensor))


def test_transforms_pickle():
    t = pickle.loads(pickle.dumps(train_transforms(crop_size=(16, 16))))
    x, y = t(*scene())
    assert x.shape == (3, 16, 16) and y.shape == (16, 16)


# ---------------------------------------------------------------- batching

class Scenes(Dataset):
    "Scenes of different sizes, as the contract returns them."
    def __init__(self, transforms): self.transforms = transforms
    def __len__(self): return 6
    def __getitem__(self, i): return self.transforms(*scene(40 + 4 * i, 60 - 3 * i))


def test_default_dataloader_collates_with_two_workers():
    loader = DataLoader(Scenes(train_transforms(crop_size=(32, 48))), batch_size=3, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    for images, masks in batches:
        assert images.shape == (3, 3, 32, 48) and images.dtype == torch.float32
        assert masks.shape == (3, 32, 48) and masks.dtype == torch.int64
        assert set(masks.unique().tolist()) <= {0, 2, 10, 11, 13, 255}


def test_cityscapes_with_train_transforms_through_a_dataloader(tmp_path):
    for k in range(4):
        image, mask = scene(36 + 6 * k, 52)
        write_cityscapes_sample(tmp_path, "train", "synth", f"synth_{k:06d}_000019", image, mask)
    ds = CityscapesSegmentation(tmp_path, "train", transforms=train_transforms(crop_size=(32, 40), **RAW))
    images, masks = next(iter(DataLoader(ds, batch_size=4, num_workers=2)))
    assert images.shape == (4, 3, 32, 40) and images.dtype == torch.float32
    assert masks.shape == (4, 32, 40) and masks.dtype == torch.int64
    for x, y in zip(images, masks):
        assert misaligned(x, y).sum() == 0
