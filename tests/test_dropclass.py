"""Algorithm 1: the DropClass module around smp, torchvision and hand-built models."""
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torchvision

from dropclass.adapters import FeaturesClassifier, convert_head_to_1x1, find_adapter, model_head
from dropclass.core import DropClass, DropClassOutput
from dropclass.features import class_features, drop_average
from dropclass.importance import conv1x1_importance, importance_scores, region_weights
from dropclass.losses import DropClassLoss, DropSchedule

C = 4
SMP_1X1 = ["DeepLabV3", "DeepLabV3Plus", "FPN", "UPerNet", "Segformer", "Linknet"]
SMP_3X3 = ["Unet", "UnetPlusPlus", "MAnet", "PAN", "PSPNet"]
SIZE = {"PAN": 128}  # PAN pools its 1/32 features further and needs at least 128x128 inputs


def smp_model(arch, classes=C, **kw):
    return getattr(smp, arch)(encoder_name="resnet18", encoder_weights=None, classes=classes, **kw)


def tv_model():
    return torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                         num_classes=C)


def own_output(model, x):
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def grad_norm(module):
    return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)


def train_and_eval_step(wrapped, x, y, encoder):
    "One DropClass training step with a class dropped, then one eval step; checks shapes and where gradients reach."
    wrapped.train()
    wrapped.drop_prob = 1.0
    out = wrapped(x)
    assert isinstance(out, DropClassOutput) and out.dropped in range(C)
    assert out.logits.shape == out.drop_logits.shape  # at the classifier's resolution
    assert out.upsample(out.logits).shape == out.upsample(out.drop_logits).shape == (x.shape[0], C, *x.shape[-2:])
    loss, parts = DropClassLoss()(out, y, lam=0.5)
    loss.backward()
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values()) and parts["sup"] > 0
    for name, part in [("encoder", encoder), ("classifier", wrapped.classifier), ("compensation", wrapped.compensate)]:
        assert grad_norm(part) > 0, f"no gradient reached the {name}"
    wrapped.eval()
    with torch.no_grad():
        pred = wrapped(x)
        assert isinstance(pred, torch.Tensor) and pred.shape == own_output(wrapped.model, x).shape


@pytest.mark.parametrize("arch", SMP_1X1 + SMP_3X3)
def test_every_smp_architecture_trains_and_evaluates(arch):
    size = SIZE.get(arch, 64)
    x, y = torch.randn(2, 3, size, size), torch.randint(0, C, (2, size, size))
    model = smp_model(arch)
    if arch in SMP_3X3:
        with pytest.raises(ValueError, match="convert_head=True"):
            DropClass(model)
    wrapped = DropClass(model, convert_head=arch in SMP_3X3)
    train_and_eval_step(wrapped, x, y, wrapped.model.encoder)


@pytest.mark.parametrize("arch", SMP_1X1 + SMP_3X3)
def test_adapter_reproduces_the_models_own_forward(arch):
    model = smp_model(arch).eval()
    convert_head_to_1x1(model)
    x = torch.randn(2, 3, SIZE.get(arch, 64), SIZE.get(arch, 64))
    ad = find_adapter(model)
    with torch.no_grad():
        torch.testing.assert_close(ad.output(model, ad.get_classifier(model)(ad.features(model, x)), x), model(x))


def test_torchvision_deeplabv3_mobilenet():
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, C, (2, 64, 64))
    wrapped = DropClass(tv_model())
    assert wrapped.classifier is wrapped.model.classifier[4]
    train_and_eval_step(wrapped, x, y, wrapped.model.backbone)
    plain = DropClass(tv_model(), inference="plain").eval()
    with torch.no_grad():
        assert torch.equal(plain(x), plain.model(x)["out"])


def test_features_and_classifier_parts():
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    wrapped = DropClass(features=features, classifier=nn.Conv2d(8, C, 1))
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, C, (2, 16, 16))
    train_and_eval_step(wrapped, x, y, features)


def test_drop_branch_equals_reference_equations():
    wrapped = DropClass(smp_model("FPN"), average="all").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        A = wrapped.features(x)
        for z in (None, 1):
            ref = drop_average(class_features(A, conv1x1_importance(wrapped.classifier.weight)), z, "all")
            expected = wrapped.model.segmentation_head(wrapped.compensate(ref))
            out = wrapped.branches(x, z)
            torch.testing.assert_close(out.upsample(out.drop_logits), expected, rtol=1e-4, atol=1e-5)


def test_class_importance_equals_exact_eq1_through_torchvision_upsampling():
    wrapped = DropClass(tv_model(), importance="class").eval()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, C, (2, 64, 64))
    with torch.no_grad():
        A = wrapped.features(x)
        head = model_head(wrapped.model, x)
        S = importance_scores(A, head, region_weights(y, C, "class")) * A.shape[-2] * A.shape[-1]
        expected = head(wrapped.compensate(drop_average(class_features(A, S), 3)))
        out = wrapped.branches(x, 3, labels=y)
        torch.testing.assert_close(out.upsample(out.drop_logits), expected, rtol=1e-4, atol=1e-4)


def test_loss_sees_the_models_own_output_stage():
    "CE terms use the model's upsampling (smp: align_corners=True), L_sup the classifier's resolution."
    from dropclass.losses import cross_entropy, cross_entropy_drop, suppression_loss
    wrapped = DropClass(smp_model("FPN"))
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, C, (2, 64, 64))
    out = wrapped.branches(x, 1)
    loss, parts = DropClassLoss()(out, y, lam=0.3)
    full, full_drop = wrapped.model.segmentation_head[1](out.logits), wrapped.model.segmentation_head[1](out.drop_logits)
    assert parts["ce"] == pytest.approx(cross_entropy(full, y).item(), rel=1e-6)
    assert parts["ce_drop"] == pytest.approx(cross_entropy_drop(full_drop, y, 1).item(), rel=1e-6)
    assert parts["sup"] == pytest.approx(suppression_loss(out.drop_logits, 1).item(), rel=1e-6)


def test_detach_importance_changes_only_the_path_through_S():
    x = torch.randn(2, 3, 64, 64)
    grads = {}
    for detach in (False, True):
        torch.manual_seed(1)
        wrapped = DropClass(smp_model("FPN"), detach_importance=detach)
        wrapped.branches(x, 2).drop_logits.square().mean().backward()
        grads[detach] = wrapped.classifier.weight.grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def test_compensation_kernel_option():
    wrapped = DropClass(smp_model("FPN"), compensation_kernel=3)
    assert wrapped.compensate[0].kernel_size == (3, 3)
    out = wrapped(torch.randn(2, 3, 64, 64))
    assert out.upsample(out.drop_logits).shape == (2, C, 64, 64)
    with pytest.raises(ValueError, match="odd"):
        DropClass(smp_model("FPN"), compensation_kernel=2)


def test_state_dict_round_trip_and_keys():
    a, b = DropClass(smp_model("FPN")), DropClass(smp_model("FPN"))
    a(torch.randn(2, 3, 64, 64))  # update BN statistics
    b.load_state_dict(a.state_dict())
    assert any(k.startswith("model.encoder.") for k in a.state_dict())
    assert any(k.startswith("compensate.") for k in a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_dropped_class_follows_the_global_seed():
    wrapped = DropClass(smp_model("FPN"), drop_prob=0.5)
    x = torch.randn(2, 3, 64, 64)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append([wrapped(x).dropped for _ in range(20)])
    assert runs[0] == runs[1] and None in runs[0] and any(z is not None for z in runs[0])


def test_toy_model_learns_with_algorithm_1():
    "About 30 steps of Algorithm 1 on a toy task lower the loss."
    def batch(n=8, size=24, s=10):
        x = torch.randn(n, 3, size, size) * 0.3
        y = torch.zeros(n, size, size, dtype=torch.long)
        for i in range(n):
            r, c = torch.randint(0, size - s, (2,)).tolist()
            y[i, r:r + s, c:c + s] = 1 + i % 3
            x[i, i % 3, r:r + s, c:c + s] += 1.5
        return x, y

    features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
    model = DropClass(features=features, classifier=nn.Conv2d(16, C, 1))
    crit, sched = DropClassLoss(), DropSchedule(max_iters=30, iters_per_epoch=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    totals, ces = [], []
    for it in range(30):
        x, y = batch()
        model.drop_prob = sched.p(it)
        loss, parts = crit(model(x), y, lam=sched.lam(it))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ces.append(parts["ce"])
    assert sum(ces[-5:]) / 5 < 0.5 * sum(ces[:5]) / 5
    model.eval()
    x, y = batch()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.8


@pytest.mark.parametrize("make, error, message", [
    (lambda: DropClass(features=nn.Identity(), classifier=nn.Linear(3, C)), TypeError, "1x1 nn.Conv2d"),
    (lambda: DropClass(features=nn.Identity(), classifier=nn.Conv2d(3, C, 3, padding=1)), ValueError, "convert_head=True"),
    (lambda: DropClass(features=nn.Identity(), classifier=nn.Conv2d(3, C, 1, stride=2)), ValueError, "stride 1"),
    (lambda: DropClass(nn.Conv2d(3, C, 1)), TypeError, "DropClass\\(features=..."),
    (lambda: DropClass(torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)),
     TypeError, "register an Adapter"),
    (lambda: DropClass(smp_model("FPN", activation="sigmoid")), ValueError, "activation=None"),
    (lambda: DropClass(smp_model("FPN"), features=nn.Identity()), TypeError, "either a model"),
    (lambda: DropClass(features=nn.Identity()), TypeError, "both features= and classifier="),
    (lambda: DropClass(smp_model("FPN"), inference="argmax"), ValueError, "inference must be one of"),
    (lambda: DropClass(smp_model("FPN"), importance="gradcam"), ValueError, "importance must be one of"),
    (lambda: DropClass(smp_model("FPN"), drop_prob=2.0), ValueError, r"drop_prob must be in \[0, 1\]"),
])
def test_bad_models_and_options_are_explained(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_inputs_are_explained():
    wrapped = DropClass(smp_model("FPN"))
    with pytest.raises(ValueError, match=r"float image batch of shape \(B, channels, H, W\)"):
        wrapped(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="float image batch"):
        wrapped(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="divisible by 32"):
        wrapped(torch.randn(2, 3, 60, 64))
    with pytest.raises(ValueError, match=r"z must be in \[0, 4\)"):
        wrapped.branches(torch.randn(2, 3, 64, 64), 4)
    out = wrapped(torch.randn(2, 3, 64, 64))
    crit = DropClassLoss()
    with pytest.raises(ValueError, match=r"values \[19\] outside \[0, 4\)"):
        crit(out, torch.full((2, 64, 64), 19), lam=0.5)
    with pytest.raises(TypeError, match="integer tensor"):
        crit(out, torch.zeros(2, 64, 64), lam=0.5)
    with pytest.raises(ValueError, match="squeeze"):
        crit(out, torch.zeros(2, 1, 64, 64, dtype=torch.long), lam=0.5)
    with pytest.raises(ValueError, match="batch size"):
        crit(out, torch.zeros(3, 64, 64, dtype=torch.long), lam=0.5)
    region = DropClass(smp_model("FPN"), importance="class")
    with pytest.raises(ValueError, match="needs the labels"):
        region(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("norm, layer", [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("none", None)])
def test_compensation_norm_options(norm, layer):
    wrapped = DropClass(smp_model("FPN"), compensation_norm=norm)
    kinds = [type(m) for m in wrapped.compensate]
    assert (layer in kinds) if layer else kinds == [nn.Conv2d, nn.ReLU]
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, C, (2, 64, 64))
    train_and_eval_step(wrapped, x, y, wrapped.model.encoder)
    with pytest.raises(ValueError, match="compensation_norm must be one of"):
        DropClass(smp_model("FPN"), compensation_norm="layer")


def test_dropped_class_from_a_dedicated_generator():
    wrapped = DropClass(smp_model("FPN"), drop_prob=1.0)
    x = torch.randn(2, 3, 64, 64)
    draws = []
    for _ in range(2):
        wrapped.generator = torch.Generator().manual_seed(7)
        torch.manual_seed(torch.randint(0, 1000, ()).item())  # the global stream is different each time
        draws.append([wrapped(x).dropped for _ in range(5)])
    assert draws[0] == draws[1]
