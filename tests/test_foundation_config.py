import pytest

from foundation.config import ConfigError, load_settings


def test_profile_selection_by_argument_env_and_file(tmp_path):
    assert load_settings(env={}).profile == "demo"
    assert load_settings(profile="tiny", env={}).profile == "tiny"
    assert load_settings(env={"GROWTHGR_PROFILE": "large"}).profile == "large"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("profile: tiny\n")
    assert load_settings(config_file=cfg, env={}).profile == "tiny"


def test_profiles_differ_where_they_should():
    tiny, large = load_settings(profile="tiny", env={}), load_settings(profile="large", env={})
    assert tiny.spark.shuffle_partitions < large.spark.shuffle_partitions


def test_file_env_and_explicit_overrides_in_order(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lake_root: /from/file\nspark:\n  shuffle_partitions: 3\n")
    s = load_settings(profile="tiny", config_file=cfg, env={})
    assert s.lake_root == "/from/file" and s.spark.shuffle_partitions == 3
    env = {"GROWTHGR_LAKE_ROOT": "s3://b/lake", "GROWTHGR_RELEASES_ROOT": "/r", "GROWTHGR_SPARK__SHUFFLE_PARTITIONS": "9"}
    s = load_settings(profile="tiny", config_file=cfg, env=env)
    assert (s.lake_root, s.releases_root, s.spark.shuffle_partitions) == ("s3://b/lake", "/r", 9)
    s = load_settings(profile="tiny", config_file=cfg, env=env, overrides={"spark": {"shuffle_partitions": 5}})
    assert s.spark.shuffle_partitions == 5


def test_unknown_key_is_rejected_with_its_name(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("spark:\n  shufle_partitions: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'spark\.shufle_partitions'"):
        load_settings(config_file=cfg, env={})
    with pytest.raises(ConfigError, match=r"unknown config key 'bogus'"):
        load_settings(env={"GROWTHGR_BOGUS": "1"})


def test_wrong_type_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match=r"config key 'spark\.shuffle_partitions'"):
        load_settings(env={"GROWTHGR_SPARK__SHUFFLE_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match=r"unknown profile 'huge'"):
        load_settings(profile="huge", env={})


def test_digest_tracks_the_effective_config():
    a, b = load_settings(profile="tiny", env={}), load_settings(profile="tiny", env={})
    assert a.digest() == b.digest()
    assert a.digest() != load_settings(profile="demo", env={}).digest()
