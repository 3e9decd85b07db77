//! Controllers and sharded backup/restore orchestration for shardvault.
