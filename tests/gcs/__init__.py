"""Tests against a real GCS API server on localhost (fake-gcs-server); see docs/storage-testing.md."""
