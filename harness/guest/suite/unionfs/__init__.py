"""Helpers for the guest-side union filesystem conformance suite.

Stdlib only and Python 3.9 compatible: this package is uploaded into test
guests next to the tests and imported as a top-level package.
"""
