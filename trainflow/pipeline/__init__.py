"""The pipeline's steps as plain library functions: load → plan → fit → evaluate → register.

Prefect tasks in `tasks/` are thin wrappers over these, so every step also runs without Prefect.
"""
