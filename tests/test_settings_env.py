from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    database_from_url,
    env_bool,
    env_decimal,
    env_float,
    env_int,
    env_list,
    env_str,
)


def test_env_bool_reads_common_spellings(monkeypatch):
    for raw, value in [
        ("1", True),
        ("yes", True),
        ("ON", True),
        ("0", False),
        ("false", False),
        ("", False),
    ]:
        monkeypatch.setenv("FLAG", raw)
        assert env_bool("FLAG") is value


def test_env_bool_fails_loudly_on_garbage(monkeypatch):
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG='maybe' is not a boolean"):
        env_bool("FLAG")


def test_env_int_checks_type_and_minimum(monkeypatch):
    monkeypatch.setenv("N", "abc")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("N", 1)
    monkeypatch.setenv("N", "-1")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_int("N", 1, minimum=0)
    monkeypatch.setenv("N", "7")
    assert env_int("N", 1) == 7


def test_env_float_takes_fractions_and_checks_the_minimum(monkeypatch):
    monkeypatch.setenv("T", "0.4")
    assert env_float("T", 10, minimum=0.1) == 0.4
    monkeypatch.setenv("T", "0.05")
    with pytest.raises(ImproperlyConfigured, match=r"at least 0\.1"):
        env_float("T", 10, minimum=0.1)
    for raw in ("soon", "inf", "nan"):
        monkeypatch.setenv("T", raw)
        with pytest.raises(ImproperlyConfigured):
            env_float("T", 10)
    monkeypatch.delenv("T")
    assert env_float("T", 10) == 10


def test_env_decimal_refuses_non_numbers(monkeypatch):
    monkeypatch.setenv("FEE", "1.5")
    assert env_decimal("FEE", "0") == Decimal("1.5")
    monkeypatch.setenv("FEE", "one")
    with pytest.raises(ImproperlyConfigured):
        env_decimal("FEE", "0")
    monkeypatch.setenv("FEE", "NaN")
    with pytest.raises(ImproperlyConfigured):
        env_decimal("FEE", "0")


def test_env_str_required_and_list(monkeypatch):
    monkeypatch.delenv("MISSING", raising=False)
    with pytest.raises(ImproperlyConfigured, match="MISSING is required"):
        env_str("MISSING")
    monkeypatch.setenv("HOSTS", "a.example, b.example,,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_database_urls():
    pg = database_from_url("postgres://bill:s%40cret@db.internal:6432/stablebill?sslmode=require")
    assert pg == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "stablebill",
        "USER": "bill",
        "PASSWORD": "s@cret",
        "HOST": "db.internal",
        "PORT": "6432",
        "OPTIONS": {"sslmode": "require"},
    }
    assert database_from_url("sqlite:////tmp/x.sqlite3")["NAME"] == "/tmp/x.sqlite3"
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        database_from_url("mysql://root@localhost/x")
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        database_from_url("postgres://localhost")
