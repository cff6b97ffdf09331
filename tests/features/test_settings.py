import dataclasses

import pytest

from echoasr.errors import EchoError
from echoasr.features import settings as settings_module
from echoasr.features.settings import FeatureSettings


def test_cache_key_is_stable_and_hex():
    key = FeatureSettings().cache_key()
    assert key == FeatureSettings().cache_key()
    assert len(key) == 16 and int(key, 16) >= 0


@pytest.mark.parametrize("change", [
    {"f0_method": "praat"}, {"f0_floor": 50.0}, {"f0_ceil": 500.0}, {"phase_reference_hz": 0.0},
])
def test_every_setting_changes_the_key(change):
    assert dataclasses.replace(FeatureSettings(), **change).cache_key() != FeatureSettings().cache_key()


def test_feature_version_changes_the_key(monkeypatch):
    before = FeatureSettings().cache_key()
    monkeypatch.setattr(settings_module, "FEATURE_VERSION", settings_module.FEATURE_VERSION + 1)
    assert FeatureSettings().cache_key() != before


@pytest.mark.parametrize("bad", [
    {"f0_method": "crepe"}, {"f0_floor": 300.0, "f0_ceil": 200.0}, {"f0_floor": 5.0}, {"phase_reference_hz": -1.0},
])
def test_invalid_settings_are_user_errors(bad):
    with pytest.raises(EchoError):
        FeatureSettings(**bad)
