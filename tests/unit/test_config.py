import pytest

from harness.cli import parse_run_args
from harness.core.errors import ConfigError
from harness.spec.config import RunConfig
from harness.spec.resolve import resolve


def test_defaults():
    cfg = RunConfig()
    assert cfg.tasks == ("cnn",) and cfg.methods == ("base", "lora", "qlora")
    assert cfg.model == "smollm2-135m" and cfg.max_seq_len == 512


def test_precedence_defaults_then_yaml_then_cli(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("methods: [base, lora]\nlr: 0.01\nepochs: 2\ndata:\n  cnn: a.jsonl\n")
    cfg = parse_run_args(["--config", str(f), "--lr", "0.5", "--data", "cnn.eval=b.jsonl"])
    assert cfg.methods == ("base", "lora")  # from YAML
    assert cfg.epochs == 2.0  # from YAML
    assert cfg.lr == 0.5  # CLI beats YAML
    assert cfg.data == {"cnn": "a.jsonl", "cnn.eval": "b.jsonl"}  # CLI adds to YAML's mapping
    assert cfg.seed == 0  # code default


def test_yaml_method_mappings_become_overrides(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("methods:\n  - base\n  - {name: lora, lr: 0.002}\n")
    assert resolve({}, str(f)).methods == ("base", "lora:lr=0.002")


@pytest.mark.parametrize("text, message", [
    ("nonsense_key: 1\n", "unknown key 'nonsense_key'"),
    ("epochs: [1, 2]\n", "epochs in"),
    ("train_limit: 1.5\n", "train_limit in"),
    ("tasks: [cnn\n", "not valid YAML at line"),
])
def test_bad_yaml_gets_one_line(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        resolve({}, str(f))
    assert "\n" not in str(e.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({}, "/nonexistent/m.yaml")


@pytest.mark.parametrize("field, value", [("train_limit", 0), ("eval_limit", -3), ("batch_size", 0),
                                          ("max_new_tokens", 0), ("lora_r", -1), ("epochs", 0),
                                          ("lr", -1.0), ("max_seq_len", 16)])
def test_non_positive_sizes_rejected(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        RunConfig(**{field: value})


def test_choices_and_run_name_checked():
    with pytest.raises(ConfigError, match="--device must be one of"):
        RunConfig(device="tpu")
    with pytest.raises(ConfigError, match="--run-name"):
        RunConfig(run_name="a/b")


def test_default_run_name_is_stable_and_ignores_the_matrix_lists():
    a = RunConfig(methods=("base",))
    b = RunConfig(methods=("base", "lora"), tasks=("cnn",))
    assert a.default_run_name() == b.default_run_name()
    assert a.default_run_name().startswith("smollm2-135m-")
    assert RunConfig(lr=0.1).default_run_name() != a.default_run_name()


def test_flag_parsing_errors():
    with pytest.raises(ConfigError, match="TASK=SOURCE"):
        parse_run_args(["--data", "cnn"])
    with pytest.raises(ConfigError, match="TASK:canonical=yours"):
        parse_run_args(["--columns", "cnn"])
    cfg = parse_run_args(["--columns", "cnn:article=story,highlights=summary"])
    assert cfg.columns == {"cnn": {"article": "story", "highlights": "summary"}}
