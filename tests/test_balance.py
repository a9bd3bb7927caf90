"""Class statistics, class weights and resampling against hand-computed values on tiny in-memory datasets."""
import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from dropclass.data.balance import (HRNET_CITYSCAPES_WEIGHTS, ClassStats, RepeatFactorSampler, class_statistics,
                                    get_mask, hrnet_weights, mask_counts, median_frequency_weights, read_index_list,
                                    repeat_class_indices, repeat_factors, write_index_list)
from dropclass.data.labels import CITYSCAPES, LabelSet

FIVE = LabelSet("five", ("p", "q", "r", "s", "t"), ((0, 0, 0),) * 5)
V = 255
MASKS = [  # 5 classes; class 3 never occurs; 255 = no class
    [[0, 0, 1], [0, V, 1]],  # p 3, q 2, one void
    [[4, 4, 4], [4, 4, 0]],  # t 5, p 1
    [[V, V, V], [V, V, V]],  # nothing labelled
    [[2, 1, 1], [1, 1, V]],  # r 1, q 4, one void
]
COUNTS = [[3, 2, 0, 0, 0], [1, 0, 0, 0, 5], [0, 0, 0, 0, 0], [0, 4, 1, 0, 0]]


class Masks(Dataset):
    "Masks as lists, black images; `load_mask` optional."
    labels, transforms = FIVE, None

    def __init__(self, masks=MASKS, with_load_mask=True):
        self.masks = [torch.tensor(m) for m in masks]
        if not with_load_mask: self.load_mask = None

    def __len__(self): return len(self.masks)
    def load_mask(self, i): return tv_tensors.Mask(self.masks[i])
    def __getitem__(self, i):
        return tv_tensors.Image(torch.zeros(3, *self.masks[i].shape, dtype=torch.uint8)), tv_tensors.Mask(self.masks[i])


class CountingReads(Masks):
    "Counts `load_mask` and `__getitem__` calls, to show which one statistics use."
    def __init__(self):
        super().__init__()
        self.loads = self.items = 0
    def load_mask(self, i): self.loads += 1; return super().load_mask(i)
    def __getitem__(self, i): self.items += 1; return super().__getitem__(i)


@pytest.fixture
def stats(): return class_statistics(Masks(), progress=False)


# statistics

def test_mask_counts_hand_counted():
    assert mask_counts(torch.tensor(MASKS[0]), 5).tolist() == COUNTS[0]
    assert mask_counts(torch.tensor(MASKS[2]), 5).tolist() == [0] * 5
    assert mask_counts(torch.tensor([[0, 7]]), 5, ignore_index=7).tolist() == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_class_statistics_hand_counted(num_workers):
    st = class_statistics(Masks(), progress=False, num_workers=num_workers)
    assert st.counts.dtype == torch.int64
    assert st.counts.tolist() == COUNTS
    assert st.classes == FIVE.classes
    assert st.pixels.tolist() == [4, 6, 1, 0, 5]
    assert st.images.tolist() == [2, 2, 1, 0, 1]
    torch.testing.assert_close(st.pixel_share, torch.tensor([4, 6, 1, 0, 5], dtype=torch.float64) / 16)
    torch.testing.assert_close(st.image_share, torch.tensor([2, 2, 1, 0, 1], dtype=torch.float64) / 4)


def test_statistics_read_masks_only_when_possible():
    ds = CountingReads()
    class_statistics(ds, progress=False)
    assert (ds.loads, ds.items) == (4, 0)
    assert class_statistics(Masks(with_load_mask=False), progress=False).counts.tolist() == COUNTS
    assert get_mask(Masks(with_load_mask=False), 1).tolist() == MASKS[1]


def test_statistics_many_masks_progress_bar(capsys):
    st = class_statistics(Masks(MASKS * 10), progress=True)  # more masks than a loader batch
    assert st.counts.tolist() == COUNTS * 10
    assert "class statistics" in capsys.readouterr().err


def test_statistics_errors():
    with pytest.raises(ValueError, match="empty"): class_statistics(Masks([]), progress=False)
    with pytest.raises(ValueError, match=r"mask 1: mask values \[4\] are outside \[0, 4\)"):
        class_statistics(Masks(), num_classes=4, progress=False)
    nolabels = Masks()
    nolabels.labels = None
    with pytest.raises(ValueError, match="pass num_classes"): class_statistics(nolabels, progress=False)
    assert class_statistics(nolabels, num_classes=5, progress=False).classes is None
    with pytest.raises(TypeError, match="integer train ids"): mask_counts(torch.zeros(2, 2), 5)
    with pytest.raises(ValueError, match=r"values \[-1\]"): mask_counts(torch.tensor([-1, 0]), 5)


def test_class_stats_validation():
    with pytest.raises(ValueError, match="integer"): ClassStats(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="N, C >= 1"): ClassStats(torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="negative"): ClassStats(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="2 class names for 3"): ClassStats(torch.ones(1, 3, dtype=torch.long), ("a", "b"))


def test_index(stats):
    assert stats.index("r") == 2 and stats.index(4) == 4
    with pytest.raises(ValueError, match=r"out of range \[0, 5\)"): stats.index(5)
    with pytest.raises(ValueError, match="out of range"): stats.index(-1)
    with pytest.raises(KeyError, match="the classes are p, q"): stats.index("z")
    with pytest.raises(KeyError, match="no class names"): ClassStats(stats.counts).index("p")


def test_rare_classes(stats):
    assert stats.rare_classes() == [3, 2]  # floor(5 / 2) = 2: s (absent), r (1 pixel)
    assert stats.rare_classes(0.6) == [3, 2, 0]
    assert stats.rare_classes(1.0) == [3, 2, 0, 4, 1]
    assert ClassStats(torch.tensor([[2, 1, 1, 5]])).rare_classes() == [1, 2]  # ties: lower train id first
    with pytest.raises(ValueError, match="fraction"): stats.rare_classes(0)


def test_rare_classes_of_cityscapes_are_the_mIoU_dagger_classes():
    share = torch.tensor([CITYSCAPES.pixel_share[c] for c in CITYSCAPES.classes])
    st = ClassStats((share * 1e7).round().long()[None], CITYSCAPES.classes)
    assert len(st.rare_classes()) == 9
    assert set(st.rare_classes()) == set(CITYSCAPES.rarest())


def test_json_round_trip(stats, tmp_path):
    text = stats.to_json()
    d = json.loads(text)  # plain JSON
    assert d["classes"] == list(FIVE.classes) and d["counts"] == COUNTS and d["pixels"] == [4, 6, 1, 0, 5]
    back = ClassStats.from_json(text)
    assert back.counts.tolist() == COUNTS and back.classes == FIVE.classes
    assert back.counts.dtype == torch.int64
    unnamed = ClassStats.from_json(ClassStats(stats.counts).to_json())
    assert unnamed.classes is None and unnamed.counts.tolist() == COUNTS
    with pytest.raises(ValueError, match="not dropclass.ClassStats JSON"): ClassStats.from_json('{"counts": [[1]]}')
    with pytest.raises(ValueError, match="not dropclass.ClassStats JSON"): ClassStats.from_json("[1, 2]")


# class weights

def test_median_frequency_weights_hand_computed(stats):
    # freq_c = pixels of c / labelled pixels of the images containing c (image totals: 5, 6, 0, 5)
    freq = {0: 4 / 11, 1: 6 / 10, 2: 1 / 5, 4: 5 / 6}
    median = (4 / 11 + 6 / 10) / 2  # four classes occur: the mean of the middle two
    w = median_frequency_weights(stats)
    assert w.dtype == torch.float32 and w.shape == (5,)
    for c, f in freq.items(): assert w[c].item() == pytest.approx(median / f, rel=1e-6)
    assert w[3].item() == pytest.approx(median / freq[2], rel=1e-6)  # absent: the largest weight
    assert median_frequency_weights(stats, unseen=0.5)[3].item() == 0.5


def test_median_frequency_odd_count_and_single_image():
    w = median_frequency_weights(ClassStats(torch.tensor([[1, 2, 6]])))  # one image: freq = share, median 2/9
    torch.testing.assert_close(w, torch.tensor([2.0, 1.0, 1 / 3]))


def test_hrnet_weights_hand_computed(stats):
    inv = {c: 1 / math.log(1 + n) for c, n in enumerate([4, 6, 1, 0, 5]) if n}
    inv[3] = max(inv.values())
    total = sum(inv.values())
    w = hrnet_weights(stats)
    for c in range(5): assert w[c].item() == pytest.approx(5 * inv[c] / total, rel=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    w0 = hrnet_weights(stats, unseen=0)
    assert w0[3].item() == 0 and w0.mean().item() == pytest.approx(1.0)


def test_weights_errors(stats):
    void = ClassStats(torch.zeros(2, 3, dtype=torch.long))
    for f in (median_frequency_weights, hrnet_weights):
        with pytest.raises(ValueError, match="no labelled pixel"): f(void)
        with pytest.raises(ValueError, match='"max" or a number'): f(stats, unseen="median")


def test_hrnet_constant_and_formula_on_cityscapes_like_counts():
    hr = torch.tensor(HRNET_CITYSCAPES_WEIGHTS)
    assert len(HRNET_CITYSCAPES_WEIGHTS) == 19 and hr.sum().item() == pytest.approx(19, abs=1e-3)
    assert HRNET_CITYSCAPES_WEIGHTS[CITYSCAPES.index("motorcycle")] == 1.1529
    share = torch.tensor([CITYSCAPES.pixel_share[c] for c in CITYSCAPES.classes], dtype=torch.float64) / 100
    ours = hrnet_weights(ClassStats((share * 2975 * 2048 * 1024).round().long()[None]))
    diff = (ours - hr).abs()
    assert diff.mean() < 0.025  # the residual the notebook reports (0.018)
    assert diff.argmax().item() == CITYSCAPES.index("traffic light")
    assert torch.corrcoef(torch.stack([ours, hr]))[0, 1] > 0.9


# resampling

def test_repeat_class_indices_exact(stats):
    assert repeat_class_indices(stats, 1) == [0, 0, 1, 2, 3, 3]
    assert repeat_class_indices(stats, "t", times=3) == [0, 1, 1, 1, 2, 3]
    assert repeat_class_indices(stats, "s") == [0, 1, 2, 3]
    assert repeat_class_indices(stats, 0, times=1) == [0, 1, 2, 3]


def test_repeat_class_indices_errors(stats):
    with pytest.raises(ValueError, match="out of range"): repeat_class_indices(stats, 5)
    with pytest.raises(KeyError, match="not a class"): repeat_class_indices(stats, "motorcycle")
    with pytest.raises(ValueError, match="times must be"): repeat_class_indices(stats, 0, times=0)
    with pytest.raises(ValueError, match="times must be"): repeat_class_indices(stats, 0, times=1.5)


def test_repeat_factors_by_hand(stats):
    # image shares f = (1/2, 1/2, 1/4, 0, 1/4); with t = 1: r_c = (sqrt 2, sqrt 2, 2, inf, 2)
    r = repeat_factors(stats, 1.0)
    assert r.dtype == torch.float64
    torch.testing.assert_close(r, torch.tensor([math.sqrt(2), 2.0, 1.0, 2.0], dtype=torch.float64))
    # t = 0.3: only classes in fewer than 30 % of the images: r and t get sqrt(1.2)
    torch.testing.assert_close(repeat_factors(stats, 0.3), torch.tensor([1.0, math.sqrt(1.2), 1.0, math.sqrt(1.2)], dtype=torch.float64))
    assert repeat_factors(stats, 0.25).tolist() == [1.0] * 4
    full = ClassStats(torch.tensor([[1, 1], [1, 0]]))  # image 0 holds every class: r_c itself must be >= 1
    assert repeat_factors(full, 0.25).tolist() == [1.0, 1.0]
    torch.testing.assert_close(repeat_factors(full, 1.0), torch.tensor([math.sqrt(2), 1.0], dtype=torch.float64))


@pytest.mark.parametrize("t", [0, -0.1, float("nan")])
def test_repeat_factors_threshold_must_be_positive(stats, t):
    with pytest.raises(ValueError, match="threshold must be > 0"): repeat_factors(stats, t)


FACTORS = torch.tensor([1.0, 2.5, 0.3, 1.0, 3.0], dtype=torch.float64)


def epoch(sampler, e):
    sampler.set_epoch(e)
    return list(sampler)


def test_sampler_deterministic_by_seed_and_epoch():
    a, b = RepeatFactorSampler(FACTORS, seed=3), RepeatFactorSampler(FACTORS, seed=3)
    assert epoch(a, 5) == epoch(b, 5)
    assert list(a) == list(a)  # the same epoch twice
    assert epoch(a, 0) != epoch(a, 1)
    assert epoch(RepeatFactorSampler(FACTORS, seed=4), 5) != epoch(b, 5)


def test_sampler_epochs_vary_and_round_stochastically():
    s = RepeatFactorSampler(FACTORS, seed=0)
    counts = []
    for e in range(1000):
        s.set_epoch(e)
        idx = s.indices()
        counts.append(torch.bincount(idx, minlength=5))
    assert len(s) == len(idx) == len(list(s))
    counts = torch.stack(counts).double()  # (E, N)
    lo = FACTORS.floor()
    assert ((counts == lo) | (counts == lo + 1)).all()  # floor or ceil, never anything else
    assert (counts.std(0)[[1, 2]] > 0).all() and (counts.std(0)[[0, 3, 4]] == 0).all()
    p = FACTORS - lo
    sigma = (p * (1 - p) / len(counts)).sqrt()  # standard error of the mean count
    assert ((counts.mean(0) - FACTORS).abs() <= 5 * sigma + 1e-12).all()
    assert counts.sum(1).mean().item() == pytest.approx(FACTORS.sum().item(), abs=0.05)
    assert len({tuple(epoch(s, e)) for e in range(50)}) > 40  # shuffled differently


def test_sampler_without_shuffle_and_in_a_dataloader():
    assert RepeatFactorSampler([2, 0, 1.0], shuffle=False).indices().tolist() == [0, 0, 2]
    s = RepeatFactorSampler(FACTORS[:4], seed=1)
    loader = DataLoader(Masks(), batch_size=2, sampler=s)
    assert sum(len(x) for x, _ in loader) == len(s)


@pytest.mark.parametrize("bad", [[], [[1.0]], [1.0, -0.5], [1.0, float("inf")]])
def test_sampler_errors(bad):
    with pytest.raises(ValueError): RepeatFactorSampler(bad)


def test_index_lists_round_trip(tmp_path):
    p = write_index_list(tmp_path / "sub" / "epoch.txt", [3, 0, 0, 2])
    assert p.read_text() == "3\n0\n0\n2\n"
    assert read_index_list(p) == [3, 0, 0, 2]
    write_index_list(p, torch.tensor([1, 1]))  # overwritten atomically
    assert read_index_list(p) == [1, 1]
    ids = ["frankfurt_000000_000294", "lindau_000001_000019"]
    assert read_index_list(write_index_list(tmp_path / "ids.txt", ids), kind=str) == ids
    assert sorted(x.name for x in (tmp_path / "sub").iterdir()) == ["epoch.txt"]  # no temporary files left


def test_index_list_errors(tmp_path):
    with pytest.raises(ValueError, match="no whitespace"): write_index_list(tmp_path / "a.txt", ["a b"])
    with pytest.raises(ValueError, match="non-empty"): write_index_list(tmp_path / "a.txt", [""])
    assert not (tmp_path / "a.txt").exists()
