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
    with pytest.raises(ConfigError, match=r"train.phases\[0\].frac_train=1.5"):
        load_config("quickstart", ["train.phases=[{start=100, frac_train=1.5}]"])
    with pytest.raises(ConfigError, match=r"train.phases\[0\].frac_train=1.5"):  # the old name still reads
        load_config("quickstart", ["train.phases=[{start=100, train_frac=1.5}]"])
    with pytest.raises(ConfigError, match=r"unknown field 'train.phases\[0\].wd'"):
        load_config("quickstart", ["train.phases=[{start=100, wd=0.1}]"])


def test_output_head_in_front_of_a_normalizing_loss_is_rejected():
    with pytest.raises(ConfigError, match=r"model.output='softmax' cannot feed train.loss='ce'"):
        load_config("omnigrok-mnist", ["model.output=softmax", "train.loss=ce"])
    with pytest.raises(ConfigError, match=r"train.phases\[0\].loss='mse'"):
        load_config("omnigrok-mnist", ["model.output=sigmoid", "train.phases=[{start=10, loss='mse'}]"])


def test_config_imports_no_task_model_or_loss_module():
    """The registries hold names and rules; config reaches them through registry.py, so the arrows
    run one way (data, models, losses import config; config imports none of them)."""
    import subprocess
    import sys
    code = ("import sys, groklab.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('groklab.data', 'groklab.models', 'groklab.train'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("value,seeds", [(3, (0, 1, 2)), ("2", (0, 1)), ("4,7", (4, 7)), ([5, 1], (5, 1)), ("3,", (3,))])
def test_parse_seeds(value, seeds):
    from groklab.config import parse_seeds
    assert parse_seeds(value) == seeds


@pytest.mark.parametrize("value,match", [(0, "must be at least 1"), ("x", "must be a count N or a list"),
                                         ("1,a", "must be a count N or a list"), (True, "must be a count"),
                                         ([1, "a"], "must be a list of integers")])
def test_parse_seeds_rejects(value, match):
    from groklab.config import parse_seeds
    with pytest.raises(ConfigError, match=match):
        parse_seeds(value, "--seeds")


def test_one_ensemble_rule_for_planner_and_engine():
    """Members may differ in MEMBER_FIELDS, less the task's shared fields (wine standardizes with
    the training rows): the planner packs by the rule the engine checks."""
    from groklab.config import MEMBER_FIELDS, check_ensemble, ensemble_signature, flatten, member_fields
    from groklab.sweep.plan import pack_groups
    a = load_config("quickstart")
    b = with_overrides(a, {"train.seed": 3, "optim.lr": 2e-3})
    check_ensemble([a, b])
    assert len(pack_groups([a, b], 8)) == 1
    assert flatten(a)["optim.betas"] == [0.9, 0.98] and "optim.lr" not in ensemble_signature(a)
    w0 = load_config("quickstart", ["data.task=wine"])
    w1 = with_overrides(w0, {"data.split_seed": 1})
    assert member_fields(w0) == MEMBER_FIELDS - {"data.split_seed"}
    with pytest.raises(ConfigError, match="differs in data.split_seed"):
        check_ensemble([w0, w1])
    assert len(pack_groups([w0, w1], 8)) == 2


def test_intervention_member_fields_come_from_member_fields():
    from groklab.config import MEMBER_FIELDS
    from groklab.train.interventions import INTERVENTIONS
    per_member = {f for name in INTERVENTIONS for f in INTERVENTIONS.get(name).member_fields}
    assert per_member <= MEMBER_FIELDS
    assert INTERVENTIONS.get("weight decay to init").member_fields == ("optim.weight_decay",)
    assert INTERVENTIONS.get("dropout").member_fields == ()


def test_suggestions_are_one_helper():
    from groklab.registry import suggest
    assert suggest("quickstrat", ["quickstart", "nanda2023"]) == " (did you mean 'quickstart'?)"
    assert suggest("zzz", ["quickstart"]) == ""


def test_the_semigrok_preset_is_the_run_measured():
    """`semigrok-transformer`'s description quotes a run of the fig. 4 quick Transformer with these
    overrides: the preset must compute exactly that run."""
    from groklab.sweep.plan import run_key

    measured = load_config("mystery-adamw-wd-zero", [
        "data.frac_train=0.24", "data.p=41", "model.d_model=64", "model.d_mlp=256", "optim.lr=3e-3",
        "train.steps=120000", "train.eval_every=50"])
    assert run_key(load_config("semigrok-transformer")) == run_key(measured)
