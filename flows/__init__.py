"""Prefect flows: thin chains of the tasks in `tasks/`."""
