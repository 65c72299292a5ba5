"""The Python SDK's tests."""
