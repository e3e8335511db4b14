"""Formats that cross the line between the model, the gateways and the backend.

Each module here is small, imports nothing else from pushsim, and is read by both sides of a
boundary, so the two sides agree on bytes without importing each other.
"""
