"""Secrets stay out of what trainflow shows: masking rules (pure) and the places that use them."""
from __future__ import annotations

import pytest

from trainflow.data import DataConnector
from trainflow.errors import ConfigError, DataError, DataSourceNotFound
from trainflow.secrets import flatten_masked, is_secret_name, mask_text, resolve_env
from trainflow.spec import SpecError, parse_spec


@pytest.mark.parametrize("name", ["password", "db_password", "api_token", "aws.secret_access_key", "apiKey",
                                  "params.private-key", "credentials", "sig"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_depth", "learning_rate", "monkey", "keyboard_size", "tokenizer",
                                  "n_estimators", "objective"])
def test_ordinary_names(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize("text, masked", [
    ("s3://AKIAXYZ:wJalrSECRET@bucket/data/*.parquet", "s3://AKIAXYZ:***@bucket/data/*.parquet"),
    ("postgresql://trainer:pa55word@db.internal:5432/mlflow", "postgresql://trainer:***@db.internal:5432/mlflow"),
    ("store https://u:p%40ss@mlflow.example.com is down", "store https://u:***@mlflow.example.com is down"),
    ("https://acct.blob.core.windows.net/c/f.parquet?sv=2024&sig=AbC%2Bd&se=1",
     "https://acct.blob.core.windows.net/c/f.parquet?sv=2024&sig=***&se=1"),
    ("http://127.0.0.1:5000/api?token=abc&page=2", "http://127.0.0.1:5000/api?token=***&page=2"),
    ("s3://AKIA:wJalr/K7MDENG+bPx@bucket/p/", "s3://AKIA:***@bucket/p/"),  # unencoded "/" in the key
    ("postgresql://u:p@ss@db/mlflow", "postgresql://u:***@db/mlflow"),
    ("http://127.0.0.1:5000/api?secretkey=SK&accesskey=AK", "http://127.0.0.1:5000/api?secretkey=***&accesskey=***"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("see http://host:8080/a/b and s3://b/k", "see http://host:8080/a/b and s3://b/k"),
    ("s3://bucket/prefix/", "s3://bucket/prefix/"),
    ("http://user@host/x", "http://user@host/x"),
])
def test_mask_text(text, masked):
    assert mask_text(text) == masked


def test_unparseable_uri_with_credentials_is_a_data_error_without_them():
    with pytest.raises(DataError) as err:
        DataConnector.from_parquet("s3://AKIA:wJalr/SECRET@bucket/x.parquet").schema
    assert "SECRET" not in str(err.value) and "URL-encoded" in str(err.value)


def test_flatten_masked_hides_secret_keys_and_uri_passwords():
    flat = flatten_masked({"max_depth": 6, "store": {"api_token": "tok-123", "uri": "s3://k:SECRET@b/p"}})
    assert flat == {"max_depth": "6", "store.api_token": "***", "store.uri": "s3://k:***@b/p"}


def test_missing_parquet_with_credentials_names_it_without_the_secret(tmp_path):
    location = f"file://{tmp_path}/nope.parquet?token=SECRET-123"
    with pytest.raises(DataSourceNotFound) as err:
        DataConnector.from_parquet(location).schema
    assert "SECRET-123" not in str(err.value) and "nope.parquet" in str(err.value)
    assert "SECRET" not in DataConnector.from_parquet("s3://AKIA:SECRET@bucket/x.parquet").describe()


def test_spec_errors_never_echo_secret_values():
    spec = {"name": "s", "features": ["a"], "label": "y",
            "data": {"train": {"parquet": "s3://AKIA:SECRET-1@bucket/t/"}},
            "trainer": {"framework": "xgboost", "n_estimators": "many", "params": {"api_token": "SECRET-3"}},
            "register": {"model_name": "m", "api_key": "SECRET-4"}}
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    message = str(err.value)
    assert "register.api_key" in message and "(got 'many')" in message  # ordinary values still shown
    assert "SECRET" not in message, message


def test_env_references_resolve_where_used(monkeypatch):
    monkeypatch.setenv("TF_TEST_KEY", "AKIA:SECRET-9")
    assert resolve_env("s3://${env:TF_TEST_KEY}@bucket/p/", "data.train.parquet") == "s3://AKIA:SECRET-9@bucket/p/"
    assert resolve_env(3, "trainer.params.x") == 3 and resolve_env("plain", "x") == "plain"
    monkeypatch.delenv("TF_TEST_KEY")
    with pytest.raises(ConfigError, match=r"data.train.parquet: environment variable TF_TEST_KEY is not set"):
        resolve_env("s3://${env:TF_TEST_KEY}@bucket/p/", "data.train.parquet")
    monkeypatch.setenv("TF_TEST_KEY", "")
    with pytest.raises(ConfigError, match="TF_TEST_KEY is empty"):
        resolve_env("${env:TF_TEST_KEY}", "data.train.parquet")
    with pytest.raises(ConfigError, match=r"malformed reference"):
        resolve_env("${env:MY-VAR}", "trainer.params.x")


def test_spec_keeps_the_reference_and_load_resolves_it(warehouse, monkeypatch):
    from trainflow.pipeline.load import load

    spec = parse_spec({"name": "env-ref", "features": ["age", "income", "credit_score"], "label": "default_risk",
                       "data": {"train": {"table": "TRAINING_DATA", "database": "${env:TF_WAREHOUSE}"},
                                "eval": {"table": "EVAL_DATA", "database": "${env:TF_WAREHOUSE}"}},
                       "register": {"model_name": "env-ref"}})
    assert spec.data.train.database == "${env:TF_WAREHOUSE}"  # what Prefect stores as the parameter
    with pytest.raises(ConfigError, match="data.train.database: environment variable TF_WAREHOUSE"):
        load(spec)
    monkeypatch.setenv("TF_WAREHOUSE", str(warehouse))
    assert load(spec).train_rows > 0
