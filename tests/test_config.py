"""Every setting of TrainConfig is checked before anything runs: a wrong type, an out-of-range value and an unknown
choice each give one line that names the field, and no data is read."""
from dataclasses import fields

import pytest

import dropclass.data.datasets as datasets
import dropclass.build as build_module
from dropclass.core import DROPCLASS_OPTIONS, DropClass, DropClassOptions
from dropclass.config import TrainConfig, config_from
from dropclass.train import train

WRONG_TYPE = {"str": 3, "int": "three", "float": "fast", "bool": "maybe", "dict": [1, 2], "tuple": 5}
RULES = {  # fields whose accepted values are not a type, a range or a list of choices: a value the rule refuses
    "resample": "class:motorcycle", "device": "tpu:x", "scale_range": (2.0, 1.0), "compensation_kernel": 2,
    "arch": "FPNN", "dataset": "kitti", "encoder": "resnet999", "train_split": "test2", "val_split": "trainval",
    "eval_splits": ("counterfactual", "nope"), "data_root": "/data/synthetic",
}


def _kind(annotation: str) -> str:
    base = annotation.replace(" | None", "")
    return "tuple" if base.startswith("tuple") else base


def settings():
    "Every setting by its flat name: TrainConfig's own fields, then DropClass's options (held in `cfg.dropclass`)."
    yield from (f for f in fields(TrainConfig) if f.name != "dropclass")
    yield from fields(DropClassOptions)


def cases():
    for f in settings():
        option = f.metadata["option"]
        yield f.name, "type", WRONG_TYPE[_kind(f.type)]
        if option.low is not None:
            low = option.low if option.low_open else option.low - 1
            yield f.name, "range", (low, low) if _kind(f.type) == "tuple" else low
        if option.high is not None: yield f.name, "range", option.high + 1 if not option.high_open else option.high
        if option.choices: yield f.name, "choice", "nope"
        if f.name in RULES: yield f.name, "rule", RULES[f.name]


CASES = list(cases())


def test_every_field_is_covered():
    named = {name for name, *_ in CASES}
    assert named == {f.name for f in settings()} and set(DROPCLASS_OPTIONS) <= named
    kinds = {kind for *_, kind, _ in [(n, k, v) for n, k, v in CASES]}
    assert {"type", "range", "choice", "rule"} <= kinds
    assert len(CASES) > 100


@pytest.fixture
def no_data(monkeypatch):
    "Reading any dataset fails the test: the checks must come first."
    def touched(*a, **k): raise AssertionError("a dataset was opened before the settings were checked")
    monkeypatch.setattr(datasets, "get_dataset", touched)
    monkeypatch.setattr(build_module, "open_dataset", touched)


@pytest.mark.parametrize("name, kind, value", CASES, ids=[f"{n}-{k}" for n, k, _ in CASES])
def test_a_bad_value_is_one_line_naming_the_field(name, kind, value, no_data):
    for make in (lambda: TrainConfig.from_dict({name: value}), lambda: config_from("demo-quick", {name: value})):
        with pytest.raises(ValueError) as e: make()
        message = str(e.value)
        assert "\n" not in message and name in message, message


def test_command_line_text_that_does_not_convert_names_the_field(no_data):
    with pytest.raises(ValueError, match="max_iters"): config_from("tiny", ["max_iters=ten"])
    with pytest.raises(ValueError, match="crop_size"): config_from("tiny", ["crop_size=64xabc"])


def test_the_issue_example_fails_before_any_data(no_data):
    with pytest.raises(ValueError, match="average must be one of 'kept', 'all'; got 'mean'"):
        config_from("tiny", {"average": "mean", "inference": "nope"})


def test_a_missing_weights_file_fails_before_any_data(no_data, tmp_path):
    cfg = config_from(None, {"encoder_weights": str(tmp_path / "missing.pth"), "out_dir": str(tmp_path / "run")})
    with pytest.raises(ValueError, match="encoder_weights .* there is no file"): train(cfg)


def test_good_values_pass_and_are_normalised():
    cfg = TrainConfig(crop_size=[64, 128], lr=1, eval_splits=None)
    assert cfg.crop_size == (64, 128) and isinstance(cfg.lr, float) and cfg.eval_splits == ("counterfactual",)
    assert TrainConfig(dataset="cityscapes", data_root="/data").eval_splits == ()


def test_dropclass_options_have_one_source():
    "DropClass, compensation and TrainConfig all take one DropClassOptions value; its fields are the only defaults."
    assert list(DROPCLASS_OPTIONS) == [f.name for f in fields(DropClassOptions)]
    cfg = TrainConfig()
    assert isinstance(cfg.dropclass, DropClassOptions) and cfg.dropclass == DropClassOptions()
    assert not {f.name for f in fields(TrainConfig)} & set(DROPCLASS_OPTIONS)  # no option restated as a config field
    for name, option in DROPCLASS_OPTIONS.items():
        assert getattr(DropClassOptions(), name) == option.default
    cfg = config_from("tiny", ["average=all", "inference=plain"])
    assert (cfg.dropclass.average, cfg.dropclass.inference) == ("all", "plain")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # the flat form (old config files) round-trips
    with pytest.raises(ValueError, match="average"): DropClassOptions(average="sometimes")


def test_overrides_are_split_in_one_place():
    from dropclass.config import parse_overrides
    assert parse_overrides(["lr=0.01", " seed =3", "data_root=a=b"]) == {"lr": "0.01", "seed": "3", "data_root": "a=b"}
    assert parse_overrides({"lr": 0.1}) == {"lr": 0.1} and parse_overrides(None) == {} and parse_overrides([]) == {}
    with pytest.raises(ValueError, match="written KEY=VALUE"): parse_overrides(["lr"])
    with pytest.raises(ValueError, match="got the string"): parse_overrides("lr=0.1")  # not split into characters
    assert config_from("tiny", ["lr=0.5", "lr=0.25"]).lr == 0.25  # the last of a repeated setting wins


@pytest.mark.parametrize("command", [["train", "--preset", "tiny"], ["demo", "--quick"], ["ablate", "--runs", "{tmp}/runs"]])
def test_a_malformed_setting_is_one_line_and_exit_code_2_in_every_command(command, capsys, tmp_path):
    from dropclass.cli import main
    rc = main([c.format(tmp=tmp_path) for c in command] + ["--out", str(tmp_path / "out"), "--set", "lr"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "KEY=VALUE" in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written
