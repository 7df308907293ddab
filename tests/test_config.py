import dataclasses

import pytest

from groklab import ConfigError, list_presets, load_config, with_overrides
from groklab.config import RunCfg, from_dict, to_dict


@pytest.mark.parametrize("name", list(list_presets()))
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert cfg.description, f"preset {name} needs a description"
    assert from_dict(RunCfg, to_dict(cfg)) == cfg


def test_config_is_frozen():
    cfg = load_config("quickstart")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_overrides_are_typed():
    cfg = load_config("power2022-add97", ["train.steps=20000", "optim.betas=[0.9, 0.99]", "train.batch_size=full"])
    assert cfg.train.steps == 20000 and cfg.optim.betas == (0.9, 0.99) and cfg.train.batch_size == "full"
    assert with_overrides(cfg, {"optim.lr": 3e-4}).optim.lr == 3e-4


@pytest.mark.parametrize("override, fragment", [
    (["data.frac_train=1.5"], "data.frac_train=1.5 must be in (0, 1)"),
    (["data.frac_train=0"], "data.frac_train=0.0 must be in (0, 1)"),
    (["data.p=1"], "data.p=1 must be in [2"),
    (["data.op=x/y", "data.p=96"], "data.p=96 must be prime"),
    (["model.d_model=130"], "model.d_model=130 must be divisible by model.n_heads=4"),
    (["model.name=transfomer"], "did you mean 'transformer'"),
    (["model.activation=swish"], "model.activation='swish' must be one of 'relu', 'gelu'"),
    (["data.op=x**y"], "data.op='x**y' is not a known operation"),
    (["train.loss=hinge"], "train.loss='hinge' is not a known loss; choose one of: ce"),
    (["train.steps=ten"], "train.steps='ten' must be an integer"),
    (["optim.bogus=1"], "unknown field 'optim.bogus'; valid fields of optim: name, lr"),
    (["optim.name=adagrad"], "optim.name='adagrad' must be one of 'adamw', 'adam', 'sgd'"),
    (["train.batch_size=0"], "train.batch_size=0 must be in [1"),
])
def test_validation_names_the_field_and_choices(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("power2022-add97", override)
    assert fragment in str(e.value)


def test_user_toml_file_works_like_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('description = "mine"\n[data]\np = 31\n[model]\nname = "mlp"\n')
    cfg = load_config(str(path))
    assert cfg.name == "mine" and cfg.data.p == 31 and cfg.model.name == "mlp"


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="presets: .*quickstart"):
        load_config("quickstrat")


def test_phases_validated():
    with pytest.raises(ConfigError, match="phases may not overlap"):
        load_config("quickstart", ["train.phases=[{start=100}, {start=50}]"])
    with pytest.raises(ConfigError, match=r"train.phases\[0\].train_frac=1.5"):
        load_config("quickstart", ["train.phases=[{start=100, train_frac=1.5}]"])
    with pytest.raises(ConfigError, match=r"unknown field 'train.phases\[0\].wd'"):
        load_config("quickstart", ["train.phases=[{start=100, wd=0.1}]"])


def test_output_head_in_front_of_a_normalizing_loss_is_rejected():
    with pytest.raises(ConfigError, match=r"model.output='softmax' cannot feed train.loss='ce'"):
        load_config("omnigrok-mnist", ["model.output=softmax", "train.loss=ce"])
    with pytest.raises(ConfigError, match=r"train.phases\[0\].loss='mse'"):
        load_config("omnigrok-mnist", ["model.output=sigmoid", "train.phases=[{start=10, loss='mse'}]"])
