"""Wrappers around external reference implementations that the tests compare against."""
