"""The reference push backend, the embedded default system under test."""
