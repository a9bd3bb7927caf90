"Tests of dropclass.tables: the comparison table by hand, its options and errors, its four renderings, and Table 1 of the paper."
import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from dropclass.data.labels import CITYSCAPES, VOC, LabelSet
from dropclass.metrics import ConfusionMatrix
from dropclass.tables import PAPER_TABLE1, ComparisonTable, comparison_table, paper_results

from _shared import random_batch

NAN = float("nan")


# ---------------------------------------------------------------------------------------------------------- the report

TOY = LabelSet("toy", ("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), pixel_share={"b": 10.0, "c": 40.0, "a": 50.0})


def toy_table():
    return comparison_table({"baseline": [0.5, 0.2, 0.4], "ours": torch.tensor([0.6, 0.3, 0.4], dtype=torch.float64)}, TOY)


def test_table_rows_by_hand():
    t = toy_table()
    assert isinstance(t, ComparisonTable)
    assert t.classes == ["b", "c", "a"] and t.rare == ["b"]  # by share; the rarer half of 3 is 1 class
    assert t.columns == ["b", "c", "a", "mIoU", "mIoU_dagger"] and t.header == ["b†", "c", "a", "mIoU", "mIoU†"]
    assert t.rows == ["baseline", "ours", "Δ", "Δ (%)"] and t.kinds == ["model", "model", "delta", "relative"]
    expected = [[20, 40, 50, 110 / 3, 20], [30, 40, 60, 130 / 3, 30], [10, 0, 10, 20 / 3, 10],
                [50, 0, 20, (20 / 3) / (110 / 3) * 100, 50]]
    np.testing.assert_allclose(t.values, expected, rtol=1e-12, atol=1e-12)


def test_table_order_rare_and_other_options():
    res = {"x": [0.1, 0.2, 0.3], "baseline": [0.3, 0.2, 0.1], "y": [0.2, 0.2, 0.2]}
    t = comparison_table(res, TOY, order=["a", 1, "c"], rare=[2, 0], other="y")
    assert t.classes == ["a", "b", "c"] and t.rare == ["c", "a"]
    assert t.rows == ["x", "baseline", "y", "Δ", "Δ (%)"]
    assert t["Δ"]["a"] == pytest.approx(-10) and t["Δ (%)"]["c"] == pytest.approx(100)
    assert t["y"]["mIoU_dagger"] == pytest.approx(20)
    single = comparison_table({"only": [0.1, 0.2, 0.3]}, TOY, rare=[])
    # NumPy ids
    assert comparison_table({"only": [0.1, 0.2, 0.3]}, TOY, order=np.argsort([3, 1, 2])).classes == ["b", "c", "a"]
    assert single.rows == ["only"] and single.columns == ["b", "c", "a", "mIoU"]
    voc = comparison_table({"m": torch.full((21,), 0.5)}, VOC)  # no pixel shares: train-id order, no mIoU†
    assert voc.classes == list(VOC.classes) and voc.rare == [] and "mIoU†" not in voc.header


def test_table_nan_and_zero_baseline():
    t = comparison_table({"baseline": [0.0, NAN, 0.5], "ours": [0.1, NAN, 0.5]}, TOY)
    assert math.isnan(t["baseline"]["b"]) and math.isnan(t["Δ"]["b"])
    assert t["Δ"]["a"] == pytest.approx(10) and math.isnan(t["Δ (%)"]["a"])  # relative change of a zero baseline
    assert t["baseline"]["mIoU"] == pytest.approx(25)  # nanmean over a and c
    assert "| n/a |" in t.to_markdown()
    row = next(r for r in csv.DictReader(io.StringIO(t.to_csv())) if r["row"] == "Δ (%)")
    assert row["a"] == "" and row["b"] == "" and float(row["c"]) == 0.0
    doc = json.loads(t.to_json())
    assert doc["rows"][3]["values"]["a"] is None


def test_table_from_confusion_matrices():
    pred, target = random_batch(C=3, seed=5)
    a, b = ConfusionMatrix(3).update(pred, target), ConfusionMatrix(3).update(target.clamp(max=2), target)
    t = comparison_table({"baseline": a, "perfect": b}, TOY)
    assert t["perfect"]["mIoU"] == pytest.approx(100)
    assert t["baseline"]["mIoU"] == pytest.approx(100 * a.miou)
    assert t["Δ"]["c"] == pytest.approx(100 * (1 - a.iou[2].item()))


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(results={"baseline": [50.0, 20.0, 40.0]}), ValueError, "divided by 100"),
    (dict(results={"baseline": [0.5, 0.2]}), ValueError, "2 IoU values"),
    (dict(results={"baseline": [-0.5, 0.2, 0.1]}), ValueError, "negative"),
    (dict(results={}), ValueError, "empty"),
    (dict(results={"a": [0.1] * 3, "b": [0.2] * 3}), KeyError, "no baseline 'baseline'"),
    (dict(results={"baseline": [0.1] * 3, "b": [0.2] * 3, "c": [0.3] * 3}), ValueError, "other="),
    (dict(results={"baseline": [0.1] * 3, "b": [0.2] * 3}, other="z"), KeyError, "must be one of"),
    (dict(results={"baseline": [0.1] * 3}, order=[0, 1]), ValueError, "each of the 3 classes"),
    (dict(results={"baseline": [0.1] * 3}, order=[0, 1, 1]), ValueError, "twice"),
    (dict(results={"baseline": [0.1] * 3}, order=[0, 1, 5]), ValueError, "order id 5 is out of range [0, 3)"),
    (dict(results={"baseline": [0.1] * 3}, rare=["d"]), ValueError, "rare 'd' is not a toy class"),
    (dict(results={"baseline": [0.1] * 3}, rare=[1, "b"]), ValueError, "rare lists a class twice"),
])
def test_table_errors(kwargs, error, message):
    with pytest.raises(error) as e: comparison_table(labels=TOY, **kwargs)
    assert message in str(e.value)


def test_markdown_renderer():
    md = toy_table().to_markdown().splitlines()
    assert len(md) == 2 + 4
    assert md[0] == "| Model | b† | c | a | mIoU | mIoU† |"
    assert all(line.count("|") == 1 + 6 for line in md)  # 6 cells: row name, 3 classes, 2 means
    assert md[3] == "| ours | 30.0 | 40.0 | 60.0 | 43.3 | 30.0 |"
    assert md[5].split(" | ")[4] == "18.2"
    assert toy_table().to_markdown(decimals=2).splitlines()[2].split(" | ")[4] == "36.67"
    assert toy_table()._repr_markdown_() == toy_table().to_markdown()


def test_text_renderer_is_fixed_width():
    t = toy_table()
    lines = t.to_text().splitlines()
    assert len(lines) == 5 and lines[0].split() == ["Model", "b†", "c", "a", "mIoU", "mIoU†"]
    assert len({len(line) for line in lines}) == 1  # right-aligned numbers: every line as wide as the header
    assert lines[3].split() == ["Δ", "10.0", "0.0", "10.0", "6.7", "10.0"]
    transposed = t.to_text(transpose=True).splitlines()
    assert len(transposed) == 1 + 5 and transposed[0].split() == ["Model", "baseline", "ours", "Δ", "Δ", "(%)"]
    assert str(t) == t.to_text()
    negative_zero = comparison_table({"baseline": [0.5, 0.5, 0.5], "ours": [0.4996, 0.5, 0.5]}, TOY)
    assert "-0.0" not in negative_zero.to_text()


def test_csv_round_trip(tmp_path):
    t = toy_table()
    text = t.to_csv(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text(encoding="utf-8") == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["row", "kind", "b", "c", "a", "mIoU", "mIoU_dagger"]
    assert [(r["row"], r["kind"]) for r in rows] == list(zip(t.rows, t.kinds))
    back = np.array([[float(r[c]) for c in t.columns] for r in rows])
    np.testing.assert_array_equal(back, t.values)  # full precision
    rounded = list(csv.DictReader(io.StringIO(t.to_csv(decimals=1))))
    assert rounded[0]["mIoU"] == "36.7"


def test_json_round_trip(tmp_path):
    t = toy_table()
    doc = json.loads(t.to_json(tmp_path / "t.json"))
    assert json.loads((tmp_path / "t.json").read_text(encoding="utf-8")) == doc
    assert doc["unit"] == "percent" and doc["columns"] == t.columns and doc["rare"] == ["b"]
    assert [(r["name"], r["kind"]) for r in doc["rows"]] == list(zip(t.rows, t.kinds))
    np.testing.assert_array_equal([[r["values"][c] for c in t.columns] for r in doc["rows"]], t.values)
    assert json.loads(t.to_json(decimals=1))["rows"][0]["values"]["mIoU"] == 36.7


# ----------------------------------------------------------------------------------------- Table 1 of the paper, HRNetV1

# Typed from the paper's Table 1 (classes by increasing pixel share, then mIoU and mIoU-dagger), independently of the
# library's copy.
T1_COLUMNS = ["motorcycle", "rider", "traffic light", "train", "bus", "truck", "bicycle", "traffic sign", "wall", "fence",
              "terrain", "person", "pole", "sky", "sidewalk", "car", "vegetation", "building", "road"]
T1_HRNETV1 = {
    "Baseline": "47.9 53.5 63.3 47.3 71.8 48.6 72.8 72.8 44.7 52.0 61.5 77.0 56.7 93.5 81.6 92.9 91.5 90.5 97.5 69.3 58.1",
    "Ours": "50.2 55.7 65.3 48.0 73.4 48.6 74.1 75.3 47.1 53.7 61.9 78.7 61.6 94.0 82.3 93.3 92.1 91.1 97.6 70.7 59.7",
    "Δ": "2.3 2.2 2.0 0.7 1.6 0.0 1.3 2.5 2.4 1.7 0.4 1.7 4.9 0.5 0.7 0.4 0.6 0.6 0.1 1.4 1.6",
    "Δ (%)": "4.8 4.1 3.2 1.5 2.2 0.0 1.8 3.4 5.4 3.3 0.7 2.2 8.6 0.5 0.9 0.4 0.7 0.7 0.1 2.0 2.9",
}
T1 = {k: np.array(v.split(), dtype=float) for k, v in T1_HRNETV1.items()}


def hrnetv1_table():
    results = {}
    for name in ("Baseline", "Ours"):
        iou = np.zeros(19)
        for col, v in zip(T1_COLUMNS, T1[name]): iou[CITYSCAPES.index(col)] = v / 100
        results[name] = iou
    return comparison_table(results, CITYSCAPES, baseline="Baseline")


def test_table1_layout():
    t = hrnetv1_table()
    assert t.classes == T1_COLUMNS
    assert t.header[:10] == [c + "†" for c in T1_COLUMNS[:9]] + ["fence"]
    assert t.header[-2:] == ["mIoU", "mIoU†"]


def test_table1_hrnetv1_per_class_rows_match_the_paper_exactly():
    t = hrnetv1_table()
    for row in ("Baseline", "Ours", "Δ", "Δ (%)"):
        np.testing.assert_array_equal(np.round(t.values[t.rows.index(row), :19], 1), T1[row][:19], err_msg=row)


def test_table1_hrnetv1_means_match_the_paper():
    t = hrnetv1_table()
    for row in ("Baseline", "Ours"):  # mIoU over 19 classes, mIoU-dagger over the 9 rarest
        np.testing.assert_array_equal(np.round(t.values[t.rows.index(row), 19:], 1), T1[row][19:], err_msg=row)
    assert t["Baseline"]["mIoU"] == pytest.approx(1317.4 / 19) and t["Baseline"]["mIoU_dagger"] == pytest.approx(522.7 / 9)
    assert round(t["Δ"]["mIoU"], 1) == T1["Δ"][19] and round(t["Δ (%)"]["mIoU"], 1) == T1["Δ (%)"][19]
    assert round(t["Δ (%)"]["mIoU_dagger"], 1) == T1["Δ (%)"][20]
    # Δ of mIoU-dagger: 1.67 from the unrounded means; the paper prints 59.7 - 58.1 = 1.6, within the rounding of the means
    assert t["Δ"]["mIoU_dagger"] == pytest.approx(1.667, abs=1e-3)
    assert abs(t["Δ"]["mIoU_dagger"] - T1["Δ"][20]) <= 0.1
    assert round(T1["Ours"][20] - T1["Baseline"][20], 1) == T1["Δ"][20]


def test_table1_library_copy_and_paper_results():
    for row, values in T1.items(): np.testing.assert_array_equal(PAPER_TABLE1["HRNetV1"][row], values)
    res = paper_results("HRNetV1")
    assert res["Baseline"][CITYSCAPES.index("motorcycle")] == pytest.approx(0.479)
    assert res["Ours"][CITYSCAPES.index("road")] == pytest.approx(0.976)
    with pytest.raises(KeyError, match="HRNetV1"): paper_results("HRNetV3")


@pytest.mark.parametrize("model", list(PAPER_TABLE1))
def test_every_table1_block_per_class_and_means(model):
    t = comparison_table(paper_results(model), CITYSCAPES, baseline="Baseline")
    block = {k: np.array(v) for k, v in PAPER_TABLE1[model].items()}
    for row in ("Baseline", "Ours"): np.testing.assert_array_equal(np.round(t.values[t.rows.index(row)], 1), block[row])
    for row in ("Δ", "Δ (%)"): np.testing.assert_array_equal(np.round(t.values[t.rows.index(row), :19], 1), block[row][:19])
    # the paper's Δ (%) of mIoU-dagger is the mean of the nine per-class Δ (%), not the relative change of the means
    assert round(block["Δ (%)"][:9].mean(), 1) == block["Δ (%)"][20]
