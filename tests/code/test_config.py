from pathlib import Path

import pytest

from components.config import ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_valid_concept_resolves_photos_relative_to_its_file(concept_dir, params_file):
    cfg = load_config(concept_dir / "concept.yaml", params_file)
    assert cfg.concept.name == "toy-robot"
    assert Path(cfg.concept.photos) == (concept_dir / "photos").resolve()
    assert cfg.params.train.max_steps == 6  # from params_file
    assert cfg.params.train.adam_beta1 == 0.9  # default


def test_unknown_key_names_file_and_key(concept_dir, tmp_path):
    params = write(tmp_path / "p.yaml", "train:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(concept_dir / "concept.yaml", params)
    assert str(params) in str(err.value)
    assert "train.lerning_rate" in str(err.value)
    assert "unknown key" in str(err.value)


def test_wrong_type_names_key(concept_dir, tmp_path):
    params = write(tmp_path / "p.yaml", "train:\n  rank: many\n")
    with pytest.raises(ConfigError, match=r"key 'train.rank'"):
        load_config(concept_dir / "concept.yaml", params)


def test_bad_override_blames_the_concept_file(concept_dir, params_file):
    concept = concept_dir / "concept.yaml"
    concept.write_text(concept.read_text().replace("overrides: {}", "overrides: {train: {rank: 0}}"))
    with pytest.raises(ConfigError) as err:
        load_config(concept, params_file)
    assert str(concept) in str(err.value) and "overrides.train.rank" in str(err.value)


def test_override_is_merged_over_params(concept_dir, params_file):
    concept = concept_dir / "concept.yaml"
    concept.write_text(concept.read_text().replace("overrides: {}", "overrides: {train: {rank: 16}}"))
    cfg = load_config(concept, params_file)
    assert cfg.params.train.rank == 16 and cfg.params.train.max_steps == 6


def test_missing_photos_folder_names_key(tmp_path, params_file):
    concept = write(tmp_path / "c.yaml", "name: x\nclass_noun: dog\nphotos: nowhere\n")
    with pytest.raises(ConfigError, match=r"key 'photos'.*nowhere.*does not exist"):
        load_config(concept, params_file)


def test_missing_required_key_and_bad_name(tmp_path, params_file):
    concept = write(tmp_path / "c.yaml", "name: Bad Name\nphotos: .\n")
    with pytest.raises(ConfigError) as err:
        load_config(concept, params_file)
    assert "key 'class_noun'" in str(err.value) and "key 'name'" in str(err.value)


def test_missing_files_are_named(tmp_path, concept_dir):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml", None)
    with pytest.raises(ConfigError, match="absent.yaml: file not found"):
        load_config(concept_dir / "concept.yaml", tmp_path / "absent.yaml")


def test_invalid_yaml_is_reported(tmp_path, concept_dir):
    params = write(tmp_path / "p.yaml", "train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(concept_dir / "concept.yaml", params)


def test_caption_template_must_name_the_token(tmp_path, concept_dir):
    params = write(tmp_path / "p.yaml", "caption:\n  template: 'a photo of a robot'\n")
    with pytest.raises(ConfigError, match=r"caption.template"):
        load_config(concept_dir / "concept.yaml", params)


def test_repository_params_and_sample_concept_are_valid():
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "concepts" / "toy-robot" / "concept.yaml", root / "params.yaml")
    assert cfg.concept.base_model == "tiny-sd"


def test_bare_yaml_no_means_no_mixed_precision(concept_dir, tmp_path):
    params = write(tmp_path / "p.yaml", "train:\n  mixed_precision: no\n")  # as `dvc exp run -S` writes it
    assert load_config(concept_dir / "concept.yaml", params).params.train.mixed_precision == "no"
