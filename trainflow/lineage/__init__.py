"""Lineage: what a registered model version records about its data, spec, code and run.

`digest` hashes a table's values so that sharding and batching do not change the result (workers
compute it while validating), `record` holds the values the registry writes, and `show` reads them
back for `trainflow lineage` and `trainflow reproduce`.
"""
from trainflow.lineage.digest import ContentDigest, batch_digest
from trainflow.lineage.record import (
    DataRecord,
    RunLineage,
    code_version,
    spec_hash,
    spec_text,
)

__all__ = ["ContentDigest", "DataRecord", "RunLineage", "batch_digest", "code_version", "spec_hash", "spec_text"]
