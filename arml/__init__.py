"""ARML re-implementation."""
