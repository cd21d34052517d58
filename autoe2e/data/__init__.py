"""Training-sample contract, shard IO, manifest and dataset."""
