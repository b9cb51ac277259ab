"""Distributed trainers with Snowflake ML's API: xgboost, lightgbm, pytorch submodules."""
