"""A design file is parsed and validated whole before any work; every mistake names file and key."""

from __future__ import annotations

import pytest

from geomxai.cli import main
from geomxai.pipeline import DesignError, load_design, run_name

TINY = """
[study]
name = "tiny"
seeds = [0, 1]

[train]
dataset = "digits"
model = "cnn2"
epochs = 1
train_subset = 200
test_subset = 100
batch_size = 50
device = "cpu"

[[cells]]
name = "regular"
regime = "regular"

[[cells]]
name = "saliencydecor"
regime = "saliencydecor"

[analysis]
probe_size = 64

[statistics]
treatment = "saliencydecor"
baselines = ["regular"]
"""


def _without(text: str, header: str) -> str:
    """``text`` without the table ``header`` and its keys."""
    head, rest = text.split(header, 1)
    return head + rest[rest.index("\n[") + 1 :]


def _write(tmp_path, text=TINY, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_design_names_its_cells_seeds_and_varied_fields(tmp_path):
    d = load_design(
        _write(
            tmp_path,
            TINY.replace(
                'regime = "saliencydecor"', 'regime = "saliencydecor"\ndecor_weight = 0.1'
            ),
        )
    )
    assert d.cell_names == ["regular", "saliencydecor"]
    assert d.seeds == (0, 1)
    assert d.varied == ["regime", "decor_weight"]
    # Seed-major: every cell at seed 0 first, so a study cut short covers every cell.
    assert [run_name(c, s) for c, s in d.plan()] == [
        "regular-s0",
        "saliencydecor-s0",
        "regular-s1",
        "saliencydecor-s1",
    ]
    config = d.config("saliencydecor", 1)
    assert (config.regime, config.seed, config.decor_weight, config.dataset) == (
        "saliencydecor",
        1,
        0.1,
        "digits",
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + "\n[bogus]\nx = 1\n", r"unknown table \[bogus\]"),
        (
            lambda t: t.replace("[analysis]", "[analysis]\nbogus = 1"),
            r"\[analysis\] bogus is not an analysis option",
        ),
        (lambda t: t.replace("probe_size = 64", "probe_size = nan"), r"\[analysis\].*probe_size"),
        (lambda t: t.replace("batch_size = 50", "batch_size = 0"), r"\[train\].*batch_size"),
        (
            lambda t: t.replace('name = "tiny"', "name = 5"),
            r"\[study\] name must be a non-empty string",
        ),
        (lambda t: t.replace("seeds = [0, 1]", "seeds = [0, 0]"), r"seeds must not repeat"),
        (
            lambda t: t.replace("seeds = [0, 1]", "seeds = [true]"),
            r"seeds must be a non-empty list of integers",
        ),
        (
            lambda t: t.replace('regime = "regular"', 'regime = "regulr"'),
            r"cells 1.*regime.*did you mean",
        ),
        (
            lambda t: t.replace('regime = "regular"', 'regime = "regular"\ndecor_weigth = 0.1'),
            r"decor_weigth is not a training field.*decor_weight",
        ),
        (
            lambda t: t.replace('baselines = ["regular"]', 'baselines = ["regulr"]'),
            r"names no cell.*regular",
        ),
        (
            lambda t: t.replace("[train]", "[train]\nseed = 3"),
            r"\[train\] seed is set by the study",
        ),
        (lambda t: "train = 5\n" + _without(t, "[train]"), r"\[train\] must be a table"),
        (lambda t: "study = 5\n" + _without(t, "[study]"), r"\[study\] must be a table"),
        (lambda t: t.replace("[train]", "[[train]]"), r"\[train\] must be a table; got list"),
        (
            lambda t: "train = 5\n" + _without(t, "[train]").replace("[study]", "[study]"),
            r"\[train\] must be a table; got int",
        ),
        (lambda t: 'dataset = "digits"\n' + t, r"dataset is set at the top level"),
        (
            lambda t: t + '\n[statistics.factorial]\nregular = "regular"\n',
            r"statistics.factorial.*missing",
        ),
        (
            lambda t: t + "\n[paper.t1]\nscale = 100\nvalues = { regular = 90 }\n",
            r"paper.t1.*metric is missing",
        ),
    ],
)
def test_every_mistake_is_found_before_any_work_and_names_its_key(tmp_path, edit, expected):
    path = _write(tmp_path, edit(TINY))
    with pytest.raises(DesignError, match=expected):
        load_design(path)


def test_a_design_that_is_not_a_small_toml_file_is_refused(tmp_path):
    with pytest.raises(DesignError, match="not valid TOML"):
        load_design(_write(tmp_path, "[study\n"))
    with pytest.raises(DesignError, match="not a regular file"):
        load_design("/dev/zero")
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20))
    with pytest.raises(DesignError, match="under 1 MiB"):
        load_design(big)
    with pytest.raises(DesignError, match="no study design 'quik'.*did you mean quick"):
        load_design("quik")


def test_the_command_line_says_a_design_mistake_in_one_line(tmp_path, caplog):
    path = _write(tmp_path, TINY.replace("[analysis]", "[analysis]\nbogus = 1"))
    rc = main(["study", str(path), "--runs", str(tmp_path / "r"), "--reports", str(tmp_path / "o")])
    assert rc == 2
    assert "[analysis] bogus is not an analysis option" in caplog.text
    assert "Traceback" not in caplog.text
    assert not (tmp_path / "r").exists()  # nothing trained


def test_the_repository_designs_are_valid():
    for name in (
        "quick",
        "digits",
        "fashion-mnist-converged",
        "paper-tables-fashion-mnist",
        "blocks-localisation",
    ):
        design = load_design(name)
        assert design.plan()


def test_the_converged_design_states_the_papers_numbers_on_our_scales():
    d = load_design("fashion-mnist-converged")
    stated = d.statistics.power_stated
    # Table I (MNIST MoRF AUC, accuracy% x masked%) / 10000
    assert stated["morf_auc"]["saliencydecor-regular"] == pytest.approx(
        (3707.19 - 5353.33) / 1e4, abs=1e-9
    )
    assert stated["morf_auc"]["saliencydecor-sgt"] == pytest.approx(
        (3707.19 - 4458.52) / 1e4, abs=1e-9
    )
    # Table III (test accuracy %) / 100; the interaction is (sd - dbn) - (sgt - regular)
    t3 = d.paper["table_3"]["values"]
    assert stated["test_acc"]["saliencydecor-dbn"] == pytest.approx(
        (t3["saliencydecor"] - t3["dbn"]) / 100
    )
    assert stated["test_acc"]["interaction"] == pytest.approx(
        ((t3["saliencydecor"] - t3["dbn"]) - (t3["sgt"] - t3["regular"])) / 100
    )
