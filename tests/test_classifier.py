"""Classifier builders (templates, xprompt, ASKG), the artifact, and SPEC §10.11 shapes."""

from pathlib import Path

import pytest
import torch
from helpers import randomize_

from stdd_fast import STDD_TEMPLATES, Classifier, ClassifierError, ConfigError, build_classifier, create_model
from stdd_fast.prompts import askg_clauses, class_prompts, prompt_grid, read_askg, read_class_names, read_xprompt

LABEL_DB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stdd-label-db"
needs_label_db = pytest.mark.skipif(not LABEL_DB.is_dir(), reason=f"official label data absent ({LABEL_DB})")


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=2)


def test_template_average_matches_the_released_formula(model):
    clf = build_classifier(model, ["abseiling", "archery"])
    assert clf.weights.shape == (2, 32) and clf.source == "templates"
    from stdd_fast.text import encode_texts

    per_template = torch.stack([encode_texts(model, [t.format(c) for t in STDD_TEMPLATES]) for c in clf.classes])
    expected = torch.nn.functional.normalize(per_template.mean(1), dim=-1)
    torch.testing.assert_close(clf.weights, expected, rtol=0, atol=1e-6)


def test_templates_kept_apart(model):
    clf = build_classifier(model, ["a", "b", "c"], templates=["a photo of {}.", "{}"], reduce="none")
    assert clf.weights.shape == (3, 2, 32)
    assert clf.prompts[1] == ["a photo of b.", "{}".format("b")]
    torch.testing.assert_close(clf.weights.norm(dim=-1), torch.ones(3, 2))


def test_prompt_order_and_cyclic_padding():
    assert class_prompts("x", ["c1", "c2", "c1"], "T {}.") == ["T x.", "T x, c1.", "T x, c2."]
    grid = prompt_grid(["x", "y"], [["c1", "c2", "c3"], ["d1"]], ["A {}", "B {}"])
    assert grid[0] == ["A x", "A x, c1", "A x, c2", "A x, c3", "B x", "B x, c1", "B x, c2", "B x, c3"]
    assert grid[1] == ["A y", "A y, d1", "A y", "A y, d1", "B y", "B y, d1", "B y", "B y, d1"]


def test_askg_rules():
    entry = {
        "label": "abseiling",
        "obj_rel_triples": ["<rope, attached to, harness>", "<hand, holds, rope>", "<eye, area where x>"],
        "act_obj_triples": ["<abseiling, requires, rope>"],
        "act_rel_triples": [
            "<abseiling, starts with, putting on the harness>",
            "<putting on the harness, precedes, clipping in>",
        ],
    }
    clauses, skipped = askg_clauses(entry, "abseiling")
    assert clauses == [
        "where rope is attached to harness",
        "where hand holds rope",
        "which requires rope",
        "starting with putting on the harness",
        "where putting on the harness precedes clipping in",
    ]
    assert skipped == ["<eye, area where x>"]


def test_save_load_round_trip(model, tmp_path):
    clf = build_classifier(model, ["run", "jump"], reduce="none")
    path = clf.save(tmp_path / "clf.safetensors")
    back = Classifier.load(path)
    assert torch.equal(back.weights, clf.weights)
    for field in ("classes", "prompts", "templates", "source", "text_tower", "arch", "logit_scale"):
        assert getattr(back, field) == getattr(clf, field), field


def test_compatibility_checks(model, tmp_path):
    clf = build_classifier(model, ["run", "jump"])
    clf.check_compatible(32, clf.text_tower)
    with pytest.raises(ClassifierError, match="32-d but the model's are 512-d"):
        clf.check_compatible(512)
    with pytest.raises(ClassifierError, match="rebuild it with this model's weights"):
        clf.check_compatible(32, "0" * 16)


def test_bad_classifier_files(tmp_path):
    with pytest.raises(ClassifierError, match="no such classifier file"):
        Classifier.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ClassifierError, match="not a readable classifier"):
        Classifier.load(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weights": torch.zeros(2, 4)}, str(other))
    with pytest.raises(ClassifierError, match="not a stdd_fast classifier"):
        Classifier.load(other)


def test_feature_file_is_normalised(tmp_path):
    feats = torch.randn(3, 5, 16) * 7
    torch.save(feats, tmp_path / "feats.pt")
    clf = Classifier.from_feature_file(tmp_path / "feats.pt", ["a", "b", "c"])
    torch.testing.assert_close(clf.weights.norm(dim=-1), torch.ones(3, 5))
    with pytest.raises(ClassifierError, match="3 weight rows but 2 class names"):
        Classifier.from_feature_file(tmp_path / "feats.pt", ["a", "b"])


def test_input_errors(model, tmp_path):
    with pytest.raises(ClassifierError, match="no class names"):
        build_classifier(model, [])
    with pytest.raises(ClassifierError, match="duplicate class names"):
        build_classifier(model, ["a", "a"])
    with pytest.raises(ClassifierError, match="containing"):
        build_classifier(model, ["a"], templates=["no placeholder"])
    with pytest.raises(ClassifierError, match=r"classes\[1\] is ''"):
        build_classifier(model, ["a", "", " "])
    with pytest.raises(ClassifierError, match=r"classes\[0\] is 1"):
        build_classifier(model, [1, 2])
    with pytest.raises(ClassifierError, match="is one string: pass a list"):
        build_classifier(model, "run,jump")
    with pytest.raises(ClassifierError, match="batch_size=0"):
        build_classifier(model, ["a"], batch_size=0)
    with pytest.raises(ConfigError, match="unknown match 'name'"):
        build_classifier(model, ["a"], match="name")
    yml = tmp_path / "x.yml"
    yml.write_text("run:\n  xprompt_oo: [where legs move]\njump:\n  xprompt_ao: [which needs legs]\n")
    with pytest.raises(ClassifierError, match="has 2 classes but 3 class names"):
        build_classifier(model, ["run", "jump", "swim"], xprompt=yml)
    with pytest.raises(ClassifierError, match="'jumpp' \\(closest: 'jump'\\)"):
        build_classifier(model, ["run", "jumpp"], xprompt=yml, match="key")
    clf = build_classifier(model, ["Jump", "run"], xprompt=yml, match="key")
    assert clf.prompts[0][1] == STDD_TEMPLATES[0].format("Jump, which needs legs")


@needs_label_db
@pytest.mark.parametrize(
    "dataset, classes_file, shape",
    [
        ("ucf101", "label_db/classes_label_ucf101.yml", (101, 224, 32)),
        ("hmdb51", "zs_label_db/hmdb-index2cls.json", (51, 160, 32)),
    ],
)
def test_official_xprompt_shapes(model, dataset, classes_file, shape):
    names = read_class_names(LABEL_DB / classes_file)
    clf = build_classifier(model, names, xprompt=LABEL_DB / "label_db" / f"classes_xprompt_{dataset}.yml")
    print(dataset, tuple(clf.weights.shape))
    assert tuple(clf.weights.shape) == shape
    assert clf.classes == names
    assert clf.prompts[0][0] == STDD_TEMPLATES[0].format(names[0])


@needs_label_db
def test_official_ucf_key_mismatches_are_reported(model):
    names = read_class_names(LABEL_DB / "zs_label_db" / "ucf101-index2cls.json")
    with pytest.raises(ClassifierError) as e:
        build_classifier(model, names, xprompt=LABEL_DB / "label_db" / "classes_xprompt_ucf101.yml", match="key")
    print(e.value)
    assert "'Handstand Pushups' (closest: 'hand stand pushups')" in str(e.value).replace('"', "'")


@needs_label_db
def test_official_askg_builds_a_prompt_classifier(model):
    clf = build_classifier(model, askg=LABEL_DB / "label_db" / "classes_ASKG_hmdb51.yml")
    print("ASKG hmdb51", tuple(clf.weights.shape), "skipped triples in", len(clf.skipped), "classes")
    assert clf.weights.shape[0] == 51 and clf.weights.ndim == 3
    assert clf.source.startswith("askg:")


@needs_label_db
def test_official_xprompt_file_counts():
    entries = read_xprompt(LABEL_DB / "label_db" / "classes_xprompt_k400.yml")
    assert len(entries) == 400
    assert read_class_names(LABEL_DB / "label_db" / "k400-index2cls.json")[0] == "abseiling"


UNREADABLE_TEXT = {
    "not UTF-8": b"\xff\xfe\x00a: [b]\n",
    "nested too deeply": b"[" * 5000,
    "not YAML": b"a: [b\n\t- c",
}


@pytest.mark.parametrize("why", list(UNREADABLE_TEXT))
@pytest.mark.parametrize("suffix", [".yml", ".json"])
def test_unreadable_label_files_give_a_classifier_error(tmp_path, why, suffix):
    from stdd_fast.prompts import read_askg

    path = tmp_path / f"labels{suffix}"
    path.write_bytes(UNREADABLE_TEXT[why])
    for reader in (read_xprompt, read_askg, read_class_names):
        with pytest.raises(ClassifierError) as e:
            reader(path)
        print(why, suffix, reader.__name__, "->", e.value)
        assert str(path) in str(e.value)


@needs_label_db
def test_the_released_k400_askg_file_reads_with_its_flow_list_triples():
    """Its "baking cookies" record writes two triples as YAML lists ([a, p, b]): read as the same triples."""
    clauses, _ = read_askg(LABEL_DB / "label_db" / "classes_ASKG_k400.yml")
    assert len(clauses) == 400
    assert {"which requires spatula", "which needs timer"} <= set(clauses["baking cookies"])
