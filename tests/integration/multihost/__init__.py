"""Tests on real separate hosts built from Linux namespaces on one machine (see hosts.py)."""
