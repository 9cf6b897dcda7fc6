"""Config values are type- and range-checked at the boundary, before any file is written."""

from __future__ import annotations

import math

import pytest

from geomxai.cli import main
from geomxai.train import ConfigError, TrainConfig, parse_override

BAD_VALUES = [
    ("decor_weight", math.nan, "decor_weight must be a finite number"),
    ("kl_weight", math.inf, "kl_weight must be a finite number"),
    ("lr", math.nan, "lr must be a finite number"),
    ("lr", math.inf, "lr must be a finite number"),
    ("lr", "0.1", "lr must be a finite number"),
    ("momentum", math.nan, "momentum must be a finite number"),
    ("momentum", 1.5, "momentum must lie in"),
    ("weight_decay", math.inf, "weight_decay must be a finite number"),
    ("amp", "maybe", "amp must be true or false"),
    ("resume", "yes", "resume must be true or false"),
    ("resume", 1, "resume must be true or false"),
    ("epochs", True, "epochs must be an integer"),
    ("epochs", 2.5, "epochs must be an integer"),
    ("seed", 1.5, "seed must be an integer"),
    ("num_workers", 1.5, "num_workers must be an integer"),
    ("batch_size", 1.5, "batch_size must be an integer"),
    ("group_size", 2.5, "group_size must be an integer"),
    ("train_subset", 10.5, "train_subset must be an integer or None"),
    ("regime", 3, "regime must be a string"),
    ("out_dir", "", "out_dir must not be empty"),
    ("out_dir", "  ", "out_dir must not be empty"),
    ("dataset", "", "dataset must not be empty"),
    ("whitening_iters", 0, "whitening_iters must be an int of at least 1 or 'auto'"),
    ("whitening_iters", "many", "whitening_iters must be an int of at least 1 or 'auto'"),
    ("whitening_iters", True, "whitening_iters must be an integer or a string"),
    ("whitening_iters", 2.5, "whitening_iters must be an integer or a string"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_VALUES)
def test_bad_values_are_refused_with_the_field_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_integers_are_accepted_for_float_fields_and_stored_as_floats():
    config = TrainConfig(lr=1, weight_decay=0)
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert isinstance(config.weight_decay, float)


@pytest.mark.parametrize("iters", [5, 22, "auto"])
def test_whitening_iters_reach_the_built_layer(iters):
    from geomxai.train import build_from_spec, model_spec

    config = TrainConfig(regime="dbn", whitening_method="newton_schulz", whitening_iters=iters)
    spec = model_spec(config, in_channels=1, num_classes=4, image_size=8)
    model = build_from_spec(spec)
    assert model.whiten.method == "newton_schulz" and model.whiten.iters == iters
    # A spec written before the field existed whitens with IterNorm's 5 steps.
    del spec["whitening"]["iters"]
    assert build_from_spec(spec).whiten.iters == 5


def test_every_field_has_a_checked_type():
    # A field of a type the checker does not know would raise TypeError here.
    TrainConfig()


@pytest.mark.parametrize(
    "override",
    [
        "epochs=2.5",
        "epochs=abc",
        "epochs=true",
        "lr=nan",
        "lr=inf",
        'lr="0.1"',
        "decor_weight=nan",
        "resume=yes",
        "amp=maybe",
        "seed=1.5",
        "out_dir=",
    ],
)
def test_cli_refuses_a_bad_override_in_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys, caplog, override
):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('dataset = "digits"\nout_dir = "run"\nprogress = false\n')
    status = main(["train", "--config", str(config), "--set", override])
    assert status == 2
    key = override.split("=", 1)[0]
    assert key in caplog.text and "Traceback" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_parse_override_reads_toml_values():
    assert parse_override("lr=nan")[1] != parse_override("lr=nan")[1]  # a real float NaN
    assert parse_override("epochs=abc") == ("epochs", "abc")
