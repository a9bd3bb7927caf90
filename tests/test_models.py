"""The paper's models and recipes: published sizes, DropClass on each, pretrained weights from files, presets."""
import pytest
import timm
import torch
import torchvision

from dropclass import DropClass, DropClassLoss
from dropclass.models import HRNETS, deeplabv3_mobilenet, hrnetv2, load_pretrained, paper_model
from dropclass.build import build_model
from dropclass.config import PRESETS, TrainConfig, config_from
from dropclass.train import train

# published sizes of the segmentation models (HRNet-Semantic-Segmentation): millions of parameters with 19 classes
PUBLISHED = {"hrnetv2_w18_small_v1": (1.5, 240), "hrnetv2_w18_small_v2": (3.9, 270), "hrnetv2_w18": (9.6, 270)}


@pytest.mark.parametrize("name", list(HRNETS))
def test_hrnet_sizes_and_feature_maps(name):
    params, width = PUBLISHED[name]
    model = hrnetv2(name, 19).eval()
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params) < 0.1
    x = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        A = model.features(x)
        assert A.shape == (2, width, 32, 64) and (A >= 0).all()  # 1/4 resolution, after the head's ReLU
        assert model(x).shape == (2, 19, 128, 256)


@pytest.mark.parametrize("name", ["hrnetv2_w18_small_v1", "deeplabv3_mobilenet_v3_large"])
def test_dropclass_trains_each_paper_model(name):
    wrapped = DropClass(paper_model(name, 19), drop_prob=1.0)
    x, y = torch.randn(2, 3, 128, 128), torch.randint(0, 19, (2, 128, 128))
    loss, parts = DropClassLoss()(wrapped(x), y, lam=0.5)
    loss.backward()
    assert parts["sup"] > 0 and wrapped.classifier.weight.grad.abs().sum() > 0
    wrapped.eval()
    with torch.no_grad():
        assert wrapped(x).shape == (2, 19, 128, 128)


def test_reference_form_equals_closed_form():
    torch.manual_seed(0)
    closed = DropClass(hrnetv2("hrnetv2_w18_small_v1", 19)).eval()
    reference = DropClass(hrnetv2("hrnetv2_w18_small_v1", 19), form="reference").eval()
    reference.load_state_dict(closed.state_dict())
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        for z in (None, 4):
            torch.testing.assert_close(reference.branches(x, z).drop_logits, closed.branches(x, z).drop_logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="form must be one of"):
        DropClass(hrnetv2("hrnetv2_w18_small_v1", 19), form="fast")


def test_load_pretrained_from_timm_and_torchvision_files(tmp_path):
    src = timm.create_model("hrnet_w18_small_v2", pretrained=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "hrnet.pth")
    seg = hrnetv2("hrnetv2_w18_small_v2", 19)
    info = load_pretrained(seg, tmp_path / "hrnet.pth")
    assert info["loaded"] == info["expected"]
    assert torch.equal(seg.features.backbone.state_dict()["stage4.0.branches.3.0.conv2.weight"],
                       src.state_dict()["stage4.0.branches.3.0.conv2.weight"])
    mnv3 = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save(mnv3.state_dict(), tmp_path / "mnv3.pth")
    dl = deeplabv3_mobilenet(19)
    load_pretrained(dl, tmp_path / "mnv3.pth")
    assert torch.equal(dl.backbone.state_dict()["16.0.weight"], mnv3.state_dict()["features.16.0.weight"])
    with pytest.raises(ValueError, match="does not fit this backbone"):
        load_pretrained(dl, tmp_path / "hrnet.pth")
    (tmp_path / "bad.pth").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_pretrained(dl, tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="no pretrained weights at"):
        build_model(TrainConfig(arch="hrnetv2_w18_small_v1", encoder_weights=str(tmp_path / "missing.pth")), 19)


@pytest.mark.parametrize("name", [p for p in PRESETS if p.startswith(("cityscapes", "voc"))])
def test_paper_recipes_are_valid_and_ask_for_their_data(name, tmp_path):
    cfg = config_from(name, {"out_dir": str(tmp_path), "data_root": str(tmp_path / "missing"), "progress": False})
    if name.startswith("cityscapes-dropclass"):
        assert (cfg.batch_size, cfg.lr, cfg.max_iters, cfg.seed, cfg.crop_size) == (12, 0.004, 59048, 777, (512, 1024))
    with pytest.raises(FileNotFoundError, match="[Ee]xpected layout|does not exist"):
        train(cfg)


def test_gpu_benchmark_script_runs_tiny_on_cpu(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_gpu", __file__.replace("tests/test_models.py", "benchmarks/bench_gpu.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--tiny", "--device", "cpu", "--arch", "hrnetv2_w18_small_v1", "--out", str(tmp_path / "r.json")])
    assert set(out["results"]) == {"baseline", "dropclass", "dropclass_reference"}
    assert out["ratios"]["dropclass_step_time"] > 0 and out["results"]["dropclass"]["train"]["schedule_hours_1_gpu"] > 0
    assert (tmp_path / "r.json").is_file()
