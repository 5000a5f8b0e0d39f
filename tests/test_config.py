import pytest
import yaml

from hoi.config import FLAVOURS, Config, ConfigError, from_dict, load_config, parse_overrides


def test_svimo_5b_derived_sizes_match_the_paper():
    cfg = load_config(flavour="svimo-5b")
    assert cfg.latent_shape == (13, 52, 78)
    assert cfg.token_grid == (13, 26, 39)
    assert cfg.tokens_per_stream == 13_182
    assert cfg.sequence_length == 26_590
    assert cfg.model.hidden_size == 3072 and cfg.model.num_layers == 42
    assert cfg.train.use_gpu and cfg.train.encode_gpus > 0  # the VAE and T5 encode on GPUs
    # sampling, evaluation and serving on a GPU each, from the config (not from the GPUs an
    # autoscaling cluster happens to run at the moment: none, before anything asks)
    assert cfg.sample.gpus_per_actor == cfg.evaluate.gpus_per_actor == cfg.serve.replica_gpus == 1
    small = load_config(flavour="svimo-small")
    assert small.sample.gpus_per_actor == small.evaluate.gpus_per_actor == 0


@pytest.mark.parametrize("name", sorted(FLAVOURS))
def test_every_flavour_builds_and_round_trips_through_yaml(name, tmp_path):
    cfg = load_config(flavour=name)
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_layers_apply_in_order_flavour_then_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("flavour: svimo-small\ndata:\n  num_frames: 9\nprepare:\n  seed: 3\n")
    cfg = load_config(path, ["--data.num_frames", "13", "--prepare.output=s3://b/p"])
    assert cfg.flavour == "svimo-small"
    assert cfg.data.height == 64  # from the flavour
    assert cfg.prepare.seed == 3  # from the file
    assert cfg.data.num_frames == 13  # override beats file
    assert cfg.prepare.output == "s3://b/p"


def test_override_values_are_typed():
    cfg = load_config(overrides=["--data.fps", "30", "--prepare.concurrency", "null",
                                 "--storage.endpoint_url", "http://127.0.0.1:5000"])
    assert cfg.data.fps == 30.0 and isinstance(cfg.data.fps, float)
    assert cfg.prepare.concurrency is None
    assert cfg.storage.endpoint_url == "http://127.0.0.1:5000"


def test_unknown_override_names_the_nearest_key():
    with pytest.raises(ConfigError, match=r"'data\.num_frame'.*did you mean 'data\.num_frames'"):
        load_config(overrides=["--data.num_frame", "13"])


def test_unknown_key_in_a_file_is_an_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("prepare:\n  num_trian: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'prepare.num_train'"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    (["--data.num_frames", "10"], "not a multiple of latent.temporal_compression"),
    (["--data.height", "40"], "not a multiple of latent.spatial_compression x model.patch_size"),
    (["--data.num_frames", "thirteen"], "must be an integer"),
    (["--prepare.video_encoding", "gif"], "must be one of"),
    (["--prepare.clips_per_shard", "0"], "at least 1"),
    (["--prepare.source", "taco"], "needs prepare.taco_root"),
    (["--flavour", "svimo-huge"], "unknown flavour"),
    (["--data.height"], "has no value"),
    (["data.height", "32"], "expected an override"),
])
def test_impossible_or_malformed_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=override)


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["--data.height=64", "--ray.address", "auto"]) == {
        "data": {"height": 64}, "ray": {"address": "auto"}}


def test_to_dict_round_trips_through_json_and_yaml():
    import json

    cfg = load_config(flavour="svimo-5b")
    plain = cfg.to_dict()
    assert plain["vid"]["encoder_channels"] == [128, 256, 512]
    assert json.loads(json.dumps(plain)) == plain
    assert yaml.safe_load(cfg.to_yaml()) == plain
    assert from_dict(Config, plain) == cfg


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-3 as a string; a float field takes it as the number it means
    cfg = load_config(overrides=["--train.learning_rate", "1e-3", "--codec.kl_weight", "2E-6"])
    assert cfg.train.learning_rate == 1e-3 and cfg.codec.kl_weight == 2e-6
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(overrides=["--train.learning_rate", "fast"])
